"""External data on load: a tensor's bytes read from a data file beside the
model, refused unless that file stays inside the model's folder.

The data file is written by tensors._TensorWriter.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path, PurePosixPath, PureWindowsPath

from ..errors import FileFormatError
from ..proto import graphengine_pb2 as pb


class _DataFiles:
    """Reads external tensor bytes, confined to the model's folder."""

    def __init__(self, model_path: Path) -> None:
        self.model_path = model_path
        self.folder = model_path.parent
        self.used: list[str] = []

    def read(self, ext: pb.ExternalData, nbytes: int, where: str) -> bytearray:
        """The ``nbytes`` bytes ``ext`` points to; FileFormatError if they are not there."""
        if ext.length != nbytes:
            raise self._error(where, f"external data length is {ext.length} bytes, but its "
                                     f"dims and dtype need {nbytes}")
        path = self._resolve(ext.location, where)
        try:
            with open(path, "rb") as data:
                size = os.fstat(data.fileno()).st_size
                if ext.offset + ext.length > size:
                    raise self._error(where, f"external data at offset {ext.offset}, length "
                                             f"{ext.length} lies past the end of "
                                             f"'{ext.location}' ({size} bytes); the data file "
                                             "is truncated or belongs to another save")
                buffer = bytearray(ext.length)  # only once the file is known to hold it
                data.seek(ext.offset)
                got = data.readinto(buffer)
        except OSError as exc:
            raise self._error(where, f"cannot read external data file '{ext.location}': "
                                     f"{exc.strerror or exc}") from exc
        if got != ext.length:
            raise self._error(where, f"read {got} of {ext.length} bytes from '{ext.location}'")
        if ext.sha256 and hashlib.sha256(buffer).hexdigest() != ext.sha256.lower():
            raise self._error(where, f"the bytes in '{ext.location}' do not match the recorded "
                                     "sha256; the data file belongs to another save of the "
                                     "model: save it again")
        if ext.location not in self.used:
            self.used.append(ext.location)
        return buffer

    def _resolve(self, location: str, where: str) -> Path:
        """The data file ``location`` names, refused unless it stays in the model's folder."""
        if not location or "\0" in location or "\\" in location:
            raise self._error(where, f"external data location {location!r} is not a relative "
                                     "path with '/' separators")
        pure = PurePosixPath(location)
        if pure.is_absolute() or PureWindowsPath(location).drive:
            raise self._error(where, f"external data location {location!r} is absolute; it "
                                     "must be relative to the model's folder")
        if ".." in pure.parts:
            raise self._error(where, f"external data location {location!r} contains '..'; it "
                                     "must stay inside the model's folder")
        folder = self.folder.resolve()
        try:
            path = (folder / pure).resolve(strict=True)
        except (OSError, RuntimeError) as exc:  # missing, or a symbolic link loop
            raise self._error(where, f"external data file '{location}' is missing next to "
                                     f"the model ({exc.__class__.__name__})") from exc
        if not path.is_relative_to(folder):
            raise self._error(where, f"external data location {location!r} leads outside the "
                                     "model's folder through a symbolic link")
        if not path.is_file():
            raise self._error(where, f"external data location {location!r} is not a file")
        return path

    def _error(self, where: str, message: str) -> FileFormatError:
        return FileFormatError(f"'{self.model_path}': {where}: {message}")
