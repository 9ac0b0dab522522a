"""Sizes that only the data set can check, checked before any trial starts.

`data.val_split` must leave training examples, `data.fraction` must leave every class (of
`data.classes`) an example, and an explicit `train.eval_examples` or `train.test_examples` must not
ask for more examples than the validation or test split has; the same for `transfer.source`. The
checks run the same split functions a trial runs (`core/data/splits.py`), on labels rebuilt from the
data set's class sizes (`core/data/sizes.py`), so they fail exactly where a trial would, with the
same message, at every combination of the edges of the distributions they depend on. Which data
sets a trial reads is its trainer's to say (`pretrial.data_sections`), passed in: spec/ names no trainer.
"""

from __future__ import annotations

import itertools
from typing import Any, Callable

from ticketsearch.errors import UserError
from ticketsearch.spec import Spec, TrialConfig
from ticketsearch.spec.sections import DataSection

# Distributions whose values change a data set's sizes or what is asked of them.
SIZE_PATHS = ("data.", "transfer.source.", "train.eval_examples", "train.test_examples")


def check_data_sizes(spec: Spec, data_sections: Callable[[TrialConfig], list[tuple[str, DataSection]]]) -> None:
    """Raise a one-line UserError naming the field when some trial of the space asks the data set for
    examples it does not have. `data_sections(trial)`: (spec path, section) of each data set the trial
    reads. Data sets not on disk are skipped (their loader reports them)."""
    from ticketsearch.core.data.sizes import class_sizes

    sizes: dict[tuple[str, str], Any] = {}
    held: dict[tuple, int] = {}  # validation examples by what the splits depend on: each split is made once
    for values, trial in _size_edges(spec):
        for path, data in data_sections(trial):
            key = (data.dataset, data.root)
            if key not in sizes:
                sizes[key] = class_sizes(data.dataset, data.root)
            if sizes[key] is None:
                continue
            try:
                split = (path, *key, data.classes, data.val_split, data.fraction, data.split_seed)
                if split not in held:
                    held[split] = _split(path, data, sizes[key].select(data.classes))
                if path == "data":  # eval_examples and test_examples are counted on the downstream data
                    _check_examples(trial, held[split], sum(sizes[key].select(data.classes).test.values()))
            except UserError as error:
                where = ", ".join(f"{p}={v!r}" for p, v in values.items())
                raise UserError(f"{spec.source}{f' (with {where})' if where else ''}: {error}") from None


def _size_edges(spec: Spec) -> list[tuple[dict[str, Any], TrialConfig]]:
    """The default trial and every combination of the edges of the size-related distributions."""
    paths = [p for p in spec.space if p.startswith(SIZE_PATHS)]
    combos = itertools.product(*(spec.space[p].extremes() for p in paths))
    return [({}, spec.default_trial)] + [(dict(zip(paths, c)), spec.trial(dict(zip(paths, c)))) for c in combos
                                         if paths]


def _split(path: str, data: DataSection, sizes) -> int:
    """Make the trial's splits of `data` on labels with its class sizes; the validation examples held."""
    import torch

    from ticketsearch.core.data.splits import stratified_split, stratified_subset

    # Labels with the data set's class sizes: the splits depend on nothing else.
    classes = sorted(sizes.train)
    train_labels = torch.repeat_interleave(torch.tensor(classes), torch.tensor([sizes.train[c] for c in classes]))
    try:
        keep, held = stratified_split(train_labels, data.val_split, data.split_seed)
        stratified_subset(train_labels[keep], data.fraction, data.split_seed)
    except UserError as error:  # the split functions name data.*: name the section checked
        message = str(error)
        raise UserError(f"{path}.{message.removeprefix('data.')}") from None
    return len(held)


def _check_examples(trial: TrialConfig, held: int, test_size: int) -> None:
    train, data = trial.train, trial.data
    if "eval_examples" in train.model_fields_set and train.eval_examples > held:
        raise UserError(f"train.eval_examples: {train.eval_examples} is more than the {held} validation "
                        f"examples data.val_split {data.val_split} holds out of {data.dataset}; accepted: "
                        f"1..{held}, a larger data.val_split, or leave it unset (up to "
                        f"{type(train).model_fields['eval_examples'].default})")
    if train.eval_offset >= held:
        raise UserError(f"train.eval_offset: {train.eval_offset} skips all {held} validation examples data.val_split "
                        f"{data.val_split} holds out of {data.dataset}; accepted: 0..{held - 1}")
    confirm = trial.search.confirm
    if confirm is not None and train.eval_offset + train.eval_examples >= held:
        raise UserError(f"search.confirm: confirmation reads validation images the search did not rank by, but "
                        f"train.eval_offset + train.eval_examples ({train.eval_offset + train.eval_examples}) use all "
                        f"{held} that data.val_split {data.val_split} holds; accepted: a larger data.val_split or "
                        f"fewer train.eval_examples")
    if train.test_examples > test_size:
        raise UserError(f"train.test_examples: {train.test_examples} is more than the {test_size} test examples "
                        f"of {data.dataset}; accepted: 1..{test_size}, or 0 for the whole test split")
