"""word-count: ``{"text": "a b c"}`` → ``{"words": 3}``."""


def run(text="", **rest):
    return {"words": len(text.split())}
