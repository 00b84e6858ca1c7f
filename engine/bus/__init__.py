"""Typed async pub/sub bus; command and event types."""

from engine.bus.bus import Bus, NoHandlerError, Subscription
from engine.bus.commands import *  # noqa: F403
from engine.bus.events import *  # noqa: F403
from engine.bus.messages import UNSTAMPED, Command, Event, Message

__all__ = ["UNSTAMPED", "Bus", "Command", "Event", "Message", "NoHandlerError", "Subscription"]
