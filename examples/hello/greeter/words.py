import os

_DATA = os.path.join(os.path.dirname(__file__), "data", "salutation.txt")


def salutation() -> str:
    with open(_DATA, encoding="utf-8") as fh:
        return fh.read().strip()
