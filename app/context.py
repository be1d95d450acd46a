"""What every page receives: the model in use, the backend, and the other pages."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from app.engine import ModelBundle


@dataclass(frozen=True)
class InferenceSettings:
    """The model-bound settings drawn in the sidebar (one control each, see app.state)."""

    padding: str
    tta: bool
    invert_masks: bool
    min_area: int


@dataclass
class PageContext:
    """Passed to each page's ``render``: no page reads hidden session keys for these.

    ``fresh_visit`` is True on the first run after arriving from another page (uploaders are
    empty then); ``pages`` maps a page's url path to its ``st.Page`` (for links)."""

    bundle: ModelBundle
    backend: str
    settings: InferenceSettings
    fresh_visit: bool = False
    pages: dict[str, Any] = field(default_factory=dict)
