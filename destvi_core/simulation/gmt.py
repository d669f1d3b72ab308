"""Gene-set files in GMT format (name, description, genes; tab-separated)."""

from __future__ import annotations

from pathlib import Path

def write_gmt(gene_sets: dict[str, list[str]], path: str | Path,
              descriptions: dict[str, str] | None = None) -> Path:
    """Write gene sets as GMT (``name<TAB>description<TAB>gene<TAB>gene...``).

    Parameters
    ----------
    gene_sets
        Set name -> genes.
    path
        Output file.
    descriptions
        Optional set name -> description (default ``"na"``).
    """
    path = Path(path)
    descriptions = descriptions or {}
    lines = []
    for name, genes in gene_sets.items():
        desc = descriptions.get(name, "na").replace("\t", " ").replace("\n", " ")
        lines.append("\t".join([name, desc, *genes]))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def read_gmt(path: str | Path) -> dict[str, list[str]]:
    """Read a GMT file into ``{set name: [genes]}`` (blank lines and empty genes ignored).

    Parameters
    ----------
    path
        GMT file.

    Raises
    ------
    InputError
        If the file is missing or a line has no gene set name.
    """
    from ..errors import InputError

    path = Path(path)
    if not path.is_file():
        raise InputError(f"gene set file {path} does not exist",
                         "give the path of a .gmt file (name, description, genes; tab-separated)")
    sets: dict[str, list[str]] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.rstrip("\r\n").split("\t")
        if not fields[0].strip():
            raise InputError(f"line {number} of {path.name} has no gene set name",
                             "each GMT line must be: name<TAB>description<TAB>gene1<TAB>gene2...")
        sets[fields[0].strip()] = [g.strip() for g in fields[2:] if g.strip()]
    return sets
