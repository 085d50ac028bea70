"""Graph analyses that passes build on: channel dependency groups for structured pruning."""

from yolograph.analysis.channel_groups import (
    ChannelAnalysis,
    ChannelGroup,
    ChannelMember,
    analyze_channels,
    find_channel_groups,
)

__all__ = [
    "ChannelAnalysis",
    "ChannelGroup",
    "ChannelMember",
    "analyze_channels",
    "find_channel_groups",
]
