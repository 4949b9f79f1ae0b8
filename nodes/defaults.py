"""Widget defaults read off the core's recipes, so a node and a Python user start from the same numbers."""
import inspect


def defaults(recipe) -> dict:
    """The keyword defaults of a recipe function or dataclass."""
    return {name: p.default for name, p in inspect.signature(recipe).parameters.items()
            if p.default is not inspect.Parameter.empty}
