"""Domain model: instruments, quotes, chains, orders, fills, positions, account snapshots."""

from engine.model.chain import OptionChain
from engine.model.instruments import (
    AssetClass,
    Equity,
    ExerciseStyle,
    Index,
    Instrument,
    Option,
    Right,
    Settlement,
    is_occ_symbol,
    normalize_strike,
)
from engine.model.orders import (
    AccountSnapshot,
    Fill,
    GroupKind,
    GroupStatus,
    Leg,
    OpenClose,
    Order,
    OrderGroup,
    OrderIntent,
    OrderStatus,
    OrderType,
    Position,
    Side,
    TimeInForce,
    can_transition,
    instrument_from_key,
    is_on_tick,
    leg_weights,
    net_price,
    net_price_label,
    oco_group_of,
    price_multiplier,
    round_to_tick,
    stop_triggered,
    worst_price,
)
from engine.model.quote import Quote, QuoteFlag

__all__ = [
    "AccountSnapshot", "AssetClass", "Equity", "ExerciseStyle", "Fill", "GroupKind", "GroupStatus", "Index", "Instrument", "Leg",
    "OpenClose", "Option", "OptionChain", "Order", "OrderGroup", "OrderIntent", "OrderStatus", "OrderType", "Position",
    "Quote", "QuoteFlag", "Right", "Settlement", "Side", "TimeInForce", "can_transition",
    "instrument_from_key", "is_occ_symbol", "is_on_tick", "leg_weights", "net_price", "net_price_label",
    "normalize_strike", "oco_group_of", "price_multiplier", "round_to_tick", "stop_triggered", "worst_price",
]
