"""Open exports of a campaign's record: a Frictionless data package (and `sdl import` of one), Parquet,
and each run's bluesky documents as JSON lines."""

from sdl.exports.datapackage import PackageError, import_package, read_package, write_package
from sdl.exports.documents import read_documents, write_documents
from sdl.exports.parquet import write_parquet

__all__ = [
    "PackageError",
    "import_package",
    "read_documents",
    "read_package",
    "write_documents",
    "write_package",
    "write_parquet",
]
