"""char-count: ``{"text": "abc"}`` → ``{"chars": 3}``."""


def run(text="", **rest):
    return {"chars": len(text)}
