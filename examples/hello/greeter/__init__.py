"""A small package with a relative import and sealed data files."""

from importlib import resources

from .words import salutation


def greet(name: str) -> str:
    return f"{salutation()}, {name}!"


def secret_recipe() -> list:
    text = resources.files(__package__).joinpath("data/recipe.txt").read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip()]
