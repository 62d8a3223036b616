"""Reservation expiry as events (pure): which reservations are due, and events every replica
builds alike, valid for the gateway, and folding to the reservation's return."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from dutylink.catalogue import load_catalogue
from dutylink.v1 import common_pb2, event_pb2
from gateway.core.validation import Validator
from gateway.core.workflows.expiry import (
    EXPIRY_TYPE,
    expiry_event,
    expiry_event_id,
    expiry_events,
)
from gateway.core.workflows.ledger import apply
from gateway.core.workflows.ledger_state import (
    Expiry,
    Holding,
    ItemKey,
    ItemLine,
    Ledger,
    LineKey,
    Stage,
)

T0 = datetime(2026, 7, 1, 8, 0, tzinfo=UTC)
ACTUAL = event_pb2.PLANE_ACTUAL
HERE = common_pb2.Jurisdiction(division_code="310000")
TENTS = ItemKey(ACTUAL, "emergency", "tents")


def reserved(thread: str, amount: int, expires: datetime | None, element: str = "1") -> Holding:
    return Holding(LineKey(thread, element), Stage.RESERVED, Decimal(amount), expires,
                   f"health/{thread}-m1")  # fmt: skip


def tents(*holdings: Holding, key: ItemKey = TENTS) -> ItemLine:
    return ItemLine(key, total=Decimal(100), unit="pcs", holdings=holdings, version=2)


def an_expiry(**changes: object) -> Expiry:
    base = Expiry(TENTS, LineKey("flood-req-3", "1"), Decimal(4), T0)
    return replace(base, **changes)  # type: ignore[arg-type]


class TestWhatIsDue:
    def test_nothing_is_due_before_the_expiry(self) -> None:
        item = tents(reserved("flood-req-3", 4, T0 + timedelta(minutes=10)))
        assert expiry_events([item], T0, HERE) == ()

    def test_a_reservation_is_due_at_its_expiry_time(self) -> None:
        item = tents(reserved("flood-req-3", 4, T0))
        (event,) = expiry_events([item], T0, HERE)
        notice = event.inventory.reservation_expired
        assert (notice.agency, notice.item_id, notice.originating_message_id) == (
            "emergency",
            "tents",
            "flood-req-3",
        )
        assert notice.quantity == 4

    def test_committed_lines_and_reservations_without_expiry_never_expire(self) -> None:
        committed = replace(reserved("a", 2, T0), stage=Stage.COMMITTED)
        item = tents(committed, reserved("b", 3, None))
        assert expiry_events([item], T0 + timedelta(days=365), HERE) == ()

    def test_no_item_lines_give_no_events(self) -> None:
        assert expiry_events([], T0, HERE) == ()

    def test_due_reservations_come_oldest_first(self) -> None:
        item = tents(reserved("late", 1, T0 + timedelta(minutes=5)), reserved("early", 1, T0))
        events = expiry_events([item], T0 + timedelta(hours=1), HERE)
        assert [e.inventory.reservation_expired.originating_message_id for e in events] == [
            "early",
            "late",
        ]


class TestTheEvent:
    def test_it_is_valid_for_the_validator_and_the_catalogue(self) -> None:
        event = expiry_event(an_expiry(), HERE)
        assert Validator().problems(event) == []
        event_type = load_catalogue().get(EXPIRY_TYPE)
        assert event_type is not None
        assert event_type.missing_fields(event) == []

    def test_the_gateway_publishes_it_on_the_items_plane_naming_the_item(self) -> None:
        drill = ItemKey(event_pb2.PLANE_EXERCISE, "fire", "pumps")
        event = expiry_event(an_expiry(item=drill), HERE)
        assert event.inventory.reservation_expired.agency == "fire"
        assert (event.source, event.plane, event.type) == (
            "dutylink",
            event_pb2.PLANE_EXERCISE,
            EXPIRY_TYPE,
        )
        assert event.jurisdiction == HERE

    def test_it_is_published_in_the_jurisdiction_of_the_items_declaration(self) -> None:
        declared = event_pb2.Event(source="emergency", type="inventory.declared", plane=ACTUAL)
        declared.jurisdiction.division_code = "310115"
        declared.inventory.declaration.items.add(item_id="tents", quantity=100, unit="pcs")
        line = replace(apply(Ledger(), declared).ledger.items[TENTS],
                       holdings=(reserved("flood-req-3", 4, T0),))  # fmt: skip
        (event,) = expiry_events([line], T0, HERE)
        assert event.jurisdiction.division_code == "310115"
        # An item line kept before lines knew their jurisdiction: the deployment's.
        (event,) = expiry_events([replace(line, division_code="")], T0, HERE)
        assert event.jurisdiction == HERE

    def test_it_happened_when_the_reservation_ran_out(self) -> None:
        event = expiry_event(an_expiry(expired_at=T0), HERE)
        assert event.time.ToDatetime(tzinfo=UTC) == T0

    def test_folding_it_returns_the_reservation_and_a_second_time_changes_nothing(self) -> None:
        item = tents(reserved("flood-req-3", 4, T0))
        (event,) = expiry_events([item], T0, HERE)
        once = apply(Ledger({TENTS: item}), event)
        assert once.accepted and once.changed == (TENTS,)
        assert once.ledger.items[TENTS].available == 100
        twice = apply(once.ledger, event)
        assert twice.changed == () and twice.ledger == once.ledger


class TestTheId:
    def test_the_same_expiry_gives_the_same_event_on_every_replica(self) -> None:
        item = tents(reserved("flood-req-3", 4, T0))
        # Another replica, later, with another clock: byte for byte the same event.
        first = expiry_events([item], T0, HERE)
        second = expiry_events([item], T0 + timedelta(minutes=3), HERE)
        assert [e.SerializeToString(deterministic=True) for e in first] == [
            e.SerializeToString(deterministic=True) for e in second
        ]

    def test_the_same_instant_in_another_time_zone_gives_the_same_id(self) -> None:
        shanghai = T0.astimezone(timezone(timedelta(hours=8)))
        assert expiry_event_id(an_expiry(expired_at=shanghai)) == expiry_event_id(an_expiry())

    def test_it_is_a_valid_event_id_whatever_the_names(self) -> None:
        long = an_expiry(item=ItemKey(ACTUAL, "emergency", "x" * 128),
                         line=LineKey("é.:/ " * 25, "e" * 128))  # fmt: skip
        assert Validator().problems(expiry_event(long, HERE)) == []

    @given(
        st.lists(
            st.tuples(
                st.sampled_from([event_pb2.PLANE_ACTUAL, event_pb2.PLANE_EXERCISE]),
                st.sampled_from(["emergency", "fire"]),
                st.sampled_from(["tents", "pumps", "tents.v2"]),
                st.sampled_from(["flood-req-3", "flood-req-3/1", "flood"]),
                st.sampled_from(["1", "2", "1/"]),
                st.integers(min_value=0, max_value=3),
            ),
            unique=True,
            min_size=2,
        )
    )
    def test_distinct_lines_or_expiry_times_get_distinct_ids(
        self, identities: list[tuple[int, str, str, str, str, int]]
    ) -> None:
        expiries = [
            Expiry(
                ItemKey(plane, agency, item),
                LineKey(thread, element),
                Decimal(1),
                T0 + timedelta(seconds=seconds),
            )
            for plane, agency, item, thread, element, seconds in identities
        ]
        ids = [expiry_event_id(expiry) for expiry in expiries]
        assert len(set(ids)) == len(ids)

    def test_the_quantity_is_not_part_of_the_id(self) -> None:
        # One reservation line and expiry is one expiry, whatever the line held.
        assert expiry_event_id(an_expiry(quantity=Decimal(1))) == expiry_event_id(
            an_expiry(quantity=Decimal(9))
        )
