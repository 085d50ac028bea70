"""Channel dependency groups for people: the `inspect --prune-groups` table and its JSON form."""

from __future__ import annotations

from yolograph.analysis.channel_groups import ChannelGroup, ChannelMember


def format_groups(groups: list[ChannelGroup]) -> str:
    """A readable table: group id, channels, member ops, and whether (or why not) it is prunable."""
    lines = [f"{'id':>4}  {'chans':>5}  {'prunable':<8}  members / consumers"]
    for group in groups:
        members = ", ".join(_member_text(m) for m in group.members)
        status = "yes" if group.prunable else "no"
        lines.append(f"{group.id:>4}  {group.size:>5}  {status:<8}  {members}")
        if group.consumers:
            lines.append(f"{'':>4}  {'':>5}  {'':<8}    read by {len(group.consumers)} ops: "
                         + ", ".join(_shorten(group.consumers, 4)))
        if not group.prunable and group.reason:
            lines.append(f"{'':>4}  {'':>5}  {'':<8}    why not: {group.reason}")
    prunable = [g for g in groups if g.prunable]
    lines.append(f"{len(groups)} groups, {len(prunable)} prunable covering {sum(g.size for g in prunable)} channel slots")
    return "\n".join(lines)


def _member_text(member: ChannelMember) -> str:
    channels = member.channels
    contiguous = len(channels) > 0 and list(channels) == list(range(channels[0], channels[0] + len(channels)))
    span = f"[{channels[0]}:{channels[-1] + 1}]" if contiguous else f"[{len(channels)} ch]"
    return f"{member.node}{span}"


def _shorten(names: tuple[str, ...], keep: int) -> list[str]:
    return list(names[:keep]) + ([f"+{len(names) - keep} more"] if len(names) > keep else [])


def groups_to_json(groups: list[ChannelGroup]) -> list[dict]:
    """JSON-ready description of each group."""
    return [
        {
            "id": g.id,
            "size": g.size,
            "prunable": g.prunable,
            "reason": g.reason,
            "members": [{"node": m.node, "op": m.op, "channels": list(m.channels)} for m in g.members],
            "consumers": list(g.consumers),
        }
        for g in groups
    ]
