"""Behaviour changes for sessions already running (`workflow.patched`), and the baseline that implies them.

Each patch id lives next to the code it guards (projection.py, waits.py, conversation.py). Every
`workflow.patched` call that answers True records a marker and an upsert of the `TemporalChangeVersion` search
attribute: two history events per patch, at the start of every session and of every run it continues as new in
(sixteen for eight patches, a sixth of a short session's history).

A run that starts with `lean-turns` (`BASELINE`, the newest patch when it was made the baseline) has every change
made before it, so it does not ask for them again: `has_change` answers True without a command. A run without that
marker, recorded by older code, asks for each change in the same places as it always did and replays unchanged.
A change made after the baseline is asked with `workflow.patched` as usual.
"""

from __future__ import annotations

from temporalio import workflow

BASELINE = "lean-turns"


def has_change(patch_id: str, *, baseline: bool) -> bool:
    """Whether this run has the change `patch_id`, made before the baseline (`baseline`: the run has it)."""
    return baseline or workflow.patched(patch_id)
