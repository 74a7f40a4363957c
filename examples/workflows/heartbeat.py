"""heartbeat: called by the every-2s rule; logs and answers when it was fired."""


def run(trigger, time, **rest):
    print(f"tick from {trigger} at {time}")
    return {"alive": True, "trigger": trigger, "firedAt": time}
