"""Values as the page shows them to people: durations, a place in the queue, counts, tables of scores."""

from __future__ import annotations


def format_duration(seconds: float | None) -> str:
    """12:05 or 1:02:03; '-' for unknown."""
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 \
        else f"{seconds // 60}:{seconds % 60:02d}"


def in_line(position: int | None) -> str:
    """Where a queued job stands, counted as people read it: the jobs ahead of it, the running one included.

    None: the job left the queue between the status read and the position read (it is starting).
    """
    if position is None:
        return "starting"
    ahead = max(position - 1, 0)
    return "next in line" if ahead == 0 else f"{ahead} job{'s' if ahead > 1 else ''} ahead of it"


def counted(count: int, thing: str) -> str:
    """'1 picture', '3 pictures'."""
    return f"{count} {thing}{'s' if count != 1 else ''}"


def table(rows: list[dict], columns: list[str] | tuple[str, ...], digits: int = 4) -> dict:
    """Rows as a Dataframe value; scores rounded for reading, empty cells for missing scores."""
    def cell(value):
        if value is None:
            return ""
        return round(value, digits) if isinstance(value, float) else value

    return {"headers": list(columns), "data": [[cell(row.get(column)) for column in columns] for row in rows]}
