"""The one shape every streaming component shares."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Self


class Streaming:
    """A component whose per-stream state is dropped by :meth:`reset`.

    :meth:`streaming` scopes one stream: state is fresh inside the ``with`` body and
    cleared again on leaving it, so nothing leaks from one stream into the next.
    """

    def reset(self) -> None:
        raise NotImplementedError

    @contextmanager
    def streaming(self) -> Iterator[Self]:
        self.reset()
        try:
            yield self
        finally:
            self.reset()
