"""shout: ``{"text": "hi"}`` → ``{"loud": "HI"}``."""


def run(text="", **rest):
    return {"loud": text.upper()}
