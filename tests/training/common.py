"""Small training settings for CPU tests: one thread, a model of a few tens of thousands of weights."""

from evalsuite.training.loop import TrainSettings


def micro(recipe: str, steps: int, **overrides) -> TrainSettings:
    fields = dict(
        recipe=recipe, steps=steps, batch=4, seq_len=32, hidden=32, layers=1, intermediate=64, heads=2,
        lr=2e-2, schedule="constant", weight_decay=0.1, clip=None, threads=1,
    )  # fmt: skip
    return TrainSettings(**{**fields, **overrides})
