"""``Tab``: one tab of the /admin page (see ``dashboard.py``), kept apart so tab modules and the page
can import each other's pieces without a cycle."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tab:
    id: str  # the panel is #panel-<id>, its tab button #tab-<id>, its route #<id>
    title: str
    body: str  # HTML (static: no data)
    script: str  # JS run after the shell's; calls registerTab(id, {show(arg), poll(), login(), forget()})
    style: str = ""
    nav: bool = True  # False: reached by a link only (a key's history page)
