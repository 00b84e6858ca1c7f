"""Typed async pub/sub bus; command and event types."""

from engine.bus.bus import Bus, NoHandlerError, Subscription
from engine.bus.commands import *  # noqa: F403
from engine.bus.events import *  # noqa: F403
from engine.bus.messages import Command, Event, Message, utcnow

__all__ = ["Bus", "Command", "Event", "Message", "NoHandlerError", "Subscription", "utcnow"]
