"""Your photo in an explorer: an upload button and the line that says what became of the file.

``PhotoUpload(use)`` is the control (ipywidgets' ``FileUpload``, image types only, one file at a time,
beside an HTML message). It hands each chosen file's bytes and name to ``use(data, name)``, the
explorer's own entry point, which prepares the picture (``vizattn.data.image``: the checks and the
decoding) and shows it, or raises ``ValueError`` for a file that is not an accepted image, is empty or
too large, having changed nothing. The control then says which file is on show, or why the file was
refused (the photo on show stays): a message in the view (the reason without Python's exception names),
never a traceback. Attaching it to an
explorer is one line, ``self.upload = PhotoUpload(self.use_photo)``, plus a place in its layout.
``menu_name`` gives an upload its short, unique name in a photo menu.

>>> shown = []
>>> control = PhotoUpload(lambda data, name: shown.append(name))
>>> control.load(b"...", "cat.png"), shown
(True, ['cat.png'])
>>> def refuse(data, name):
...     raise ValueError("the image bytes: not an image")
>>> control = PhotoUpload(refuse)
>>> control.load(b"hello", "notes.txt"), "not an image" in control.message.value
(False, True)
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable

import ipywidgets as widgets

from ..images import FORMATS, MAX_FILE_BYTES
from .base import note_html

__all__ = ["PhotoUpload", "menu_name", "ACCEPT"]

# what the browser's file dialog offers: the types of images.FORMATS (the decoder decides, not the name)
ACCEPT = "image/png,image/jpeg,image/gif,image/bmp,image/webp,.png,.jpg,.jpeg,.gif,.bmp,.webp"
MENU_CHARS = 16  # an upload's name in a photo menu: fits the explorers' 250 px menus


def menu_name(name: str, taken) -> str:
    """A name for the uploaded file ``name`` in a photo menu: at most ``MENU_CHARS`` characters (the middle
    cut out), and not one of ``taken`` (`` (2)``, `` (3)``, ... appended).

    >>> menu_name("IMG_20240501_181500.jpg", ()), menu_name("cat.png", ("cat.png",))
    ('IMG_2024…500.jpg', 'cat.png (2)')
    """
    name = " ".join(str(name).split()) or "your photo"
    if len(name) > MENU_CHARS:
        name = name[:8] + "…" + name[-(MENU_CHARS - 9):]
    found, n = name, 1
    while found in taken:
        n += 1
        found = f"{name} ({n})"
    return found


class PhotoUpload(widgets.HBox):
    """An upload button for one picture and a message beside it; a chosen file goes to ``use(data, name)``.

    ``use`` shows the picture or raises ``ValueError`` (nothing changed); ``load`` is what the button
    calls, and returns whether the picture is on show. ``message`` holds the outcome.
    """

    def __init__(self, use: Callable[[bytes, str], object], description: str = "your photo"):
        self.use = use
        self.button = widgets.FileUpload(accept=ACCEPT, multiple=False, description=description,
                                         tooltip=f"an image file ({', '.join(FORMATS)}), at most "
                                                 f"{MAX_FILE_BYTES // 2**20} MiB",
                                         layout=widgets.Layout(width="160px", flex="0 0 auto"))
        self.message = widgets.HTML(note_html(f"or choose a picture of yours ({', '.join(FORMATS)}, at most "
                                               f"{MAX_FILE_BYTES // 2**20} MiB)"))
        self.button.observe(self._chosen, "value")
        super().__init__([self.button, self.message], layout=widgets.Layout(align_items="center"))
        self.add_class("vizattn-upload")

    def load(self, data: bytes, name: str) -> bool:
        """Hand the file to ``use``; the message says what it showed, or why the file was refused."""
        try:
            self.use(bytes(data), name)
        except ValueError as err:
            reason = re.sub(r"\b[A-Z]\w*(Error|Exception|Warning): ", "", str(err))  # words for people: no class names
            reason = reason.replace("the image bytes", "the file")  # vizattn.data.image's name for bytes
            self.message.value = (f"<span style='font-size: 13px; color: #b00'><b>{html.escape(name)} was not "
                                  f"used:</b> {html.escape(reason)}. The photo on show is unchanged.</span>")
            return False
        self.message.value = note_html(f"showing {name} (your photo, now in the photo menu)")
        return True

    def _chosen(self, change) -> None:
        if not change["new"]:  # the button emptied below
            return
        file = change["new"][-1]
        self.load(file["content"], file["name"])
        self.button.value = ()  # drop the bytes (kept above if used); the same file can be chosen again
