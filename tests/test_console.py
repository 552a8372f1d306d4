"""Only the known library messages are silenced."""

from __future__ import annotations

import warnings

from vaesae.console import silence_lightning_pytree_warning


def test_only_the_lightning_pytree_deprecation_is_silenced():
    known = "`isinstance(treespec, LeafSpec)` is deprecated, use `treespec.is_leaf()` instead."
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        silence_lightning_pytree_warning()
        warnings.warn(known, FutureWarning, stacklevel=1)
        warnings.warn("another API is deprecated", FutureWarning, stacklevel=1)
        # the same words under another category still show
        warnings.warn(known, UserWarning, stacklevel=1)
    assert [(str(w.message), w.category) for w in caught] == [
        ("another API is deprecated", FutureWarning),
        (known, UserWarning),
    ]
