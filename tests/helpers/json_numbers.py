"""Helpers for tests that read the JSON the commands write."""


def json_numbers(obj):
    """Every int/float (not bool) in a nested structure of dicts and lists, in order."""
    if isinstance(obj, dict):
        for v in obj.values():
            yield from json_numbers(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from json_numbers(v)
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield obj
