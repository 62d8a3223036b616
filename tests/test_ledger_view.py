"""The resource ledger over gRPC (BoardService.GetLedger) on a real NATS and gateway: declared
stock and a reservation read back with the right available quantity, the agency's own ledger
only (any agency's for the command centre), every answer and refusal in the audit log, and
FAILED_PRECONDITION from a gateway that keeps no ledger. Also the pure paging of item lines."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from decimal import Decimal

import grpc
import pytest

from dutylink.adapters.sdk.client import DutyLinkClient
from dutylink.adapters.sdk.retry import NO_RETRY
from dutylink.v1 import audit_pb2, board_pb2
from gateway.core.projections.ledger_wire import ledger_page
from gateway.core.workflows.ledger_state import Holding, ItemKey, ItemLine, LineKey, Stage
from gateway.testkit.inprocess import config_for_tests, gateway_for_tests
from tests.conftest import TOKENS
from tests.loop_support import ACTUAL, EXERCISE, declare, now, request, respond
from tests.test_audit_facts import logged
from tests.test_cli_exchange import dutylink


def ledger_queries(entries: list[audit_pb2.AuditEntry]) -> list[audit_pb2.AuditEntry]:
    return [
        e
        for e in entries
        if e.action == audit_pb2.AUDIT_ACTION_BOARD_QUERY and e.reason.startswith("ledger of ")
    ]


async def test_declared_stock_and_a_reservation_show_to_the_owner_and_the_command_centre_only(
    nats_url: str,
) -> None:
    async with (
        gateway_for_tests(nats_url, config_for_tests()) as gateway,
        DutyLinkClient(gateway.address, token=TOKENS["health"], retry=NO_RETRY) as health,
        DutyLinkClient(gateway.address, token=TOKENS["fire"], retry=NO_RETRY) as fire,
        DutyLinkClient(gateway.address, token=TOKENS["command"], retry=NO_RETRY) as command,
    ):
        await health.publish(declare("AMB-L", 4, threshold=3))
        await health.publish(declare("AMB-X", 1, plane=EXERCISE))  # another plane's stock
        until = now() + timedelta(hours=1)
        await fire.publish(request("RM-LEDGER", 2))
        await health.publish(respond("RM-LEDGER", "AMB-L", "health", 2, reserved_until=until))

        own = await health.ledger()
        assert (own.agency, own.plane, own.truncated, own.every_agency) == (
            "health", ACTUAL, False, False
        )  # fmt: skip
        (item,) = own.items
        assert (item.item_id, item.unit, item.type_info) == ("AMB-L", "vehicles", "ambulance")
        assert (item.total, item.available, item.reserved, item.committed) == (4, 2, 2, 0)
        assert (item.threshold, item.below_threshold, item.out_of_service) == (3, True, False)
        assert item.division_code == "310115"
        (holding,) = item.holdings
        assert (holding.originating_message_id, holding.resource_info_element_id) == (
            "RM-LEDGER", "1"
        )  # fmt: skip
        assert holding.stage == board_pb2.LEDGER_STAGE_RESERVED and holding.quantity == 2
        assert holding.expires.ToSeconds() == int(until.timestamp())
        assert holding.moved_by.startswith("health/")
        drill = await health.ledger(plane=EXERCISE)
        assert [i.item_id for i in drill.items] == ["AMB-X"]

        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await fire.ledger("health")
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "fire may read only its own ledger" in (caught.value.details() or "")
        assert (await fire.ledger()).items == []  # fire declared nothing

        seen = await command.ledger("health")
        assert seen.every_agency and list(seen.items) == list(own.items)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await command.ledger("Not An Agency")
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT

        as_health = ("--target", gateway.address, "--token", TOKENS["health"])
        code, out, err = await dutylink("ledger", *as_health)
        assert code == 0, err
        (row,) = [line for line in out.splitlines() if "AMB-L" in line]
        cells = [cell.strip() for cell in row.split("│")[1:11]]
        assert cells == ["AMB-L", "vehicles", "4", "2", "2", "0", "0", "0", "3", "LOW"]
        code, out, err = await dutylink("ledger", "health", "--token", TOKENS["fire"],
                                        "--target", gateway.address)  # fmt: skip
        assert code != 0 and "fire may read only its own ledger" in err

    queries = ledger_queries(await logged(nats_url))
    answered = [e for e in queries if e.outcome == audit_pb2.AUDIT_OUTCOME_OK]
    expected = hashlib.sha256(own.SerializeToString()).digest()
    own_answers = [e for e in answered if e.event_digest == expected]  # the SDK's and the CLI's
    assert len(own_answers) == 2 and {e.actor_agency for e in own_answers} == {"health"}
    assert {e.reason for e in own_answers} == {"ledger of health on the actual plane: 1 items"}
    assert any(e.actor_agency == "command" and e.reason.startswith("ledger of health")
               for e in answered)  # fmt: skip
    denied = [e for e in queries if e.outcome == audit_pb2.AUDIT_OUTCOME_DENIED]
    assert {e.actor_agency for e in denied} == {"fire"} and len(denied) == 2


async def test_a_gateway_without_lifecycles_keeps_no_ledger_and_says_so(nats_url: str) -> None:
    config = config_for_tests(gateway={"enforce_lifecycles": False})
    async with (
        gateway_for_tests(nats_url, config) as gateway,
        DutyLinkClient(gateway.address, token=TOKENS["health"], retry=NO_RETRY) as health,
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await health.ledger()
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "enforce_lifecycles is off" in (caught.value.details() or "")
    (refused,) = ledger_queries(await logged(nats_url))
    assert refused.outcome == audit_pb2.AUDIT_OUTCOME_FAILED


def line(item_id: str, total: int, *holdings: Holding) -> ItemLine:
    return ItemLine(ItemKey(ACTUAL, "emergency", item_id), total=Decimal(total), unit="pcs",
                    holdings=holdings)  # fmt: skip


def holding(thread: str, stage: Stage, amount: str) -> Holding:
    return Holding(LineKey(thread, "1"), stage, Decimal(amount), None, f"fire/{thread}")


class TestLedgerPage:
    def test_each_stage_is_summed_and_available_is_what_none_holds(self) -> None:
        tents = line("tents", 10, holding("a", Stage.RESERVED, "1.5"),
                     holding("b", Stage.COMMITTED, "2"), holding("c", Stage.DEPLOYED, "3"),
                     holding("d", Stage.RETURNING, "0.5"), holding("e", Stage.RESERVED, "1"))  # fmt: skip
        (item,), truncated = ledger_page([tents], item_prefix="", limit=10)
        assert not truncated
        assert (item.reserved, item.committed, item.deployed, item.returning) == (2.5, 2, 3, 0.5)
        assert item.available == 2 and item.total == 10
        assert [h.originating_message_id for h in item.holdings] == ["a", "b", "c", "d", "e"]
        assert not item.holdings[0].HasField("expires")

    def test_items_come_by_id_filtered_by_prefix_and_cut_at_the_limit(self) -> None:
        lines = [line(name, 1) for name in ("tents-b", "pumps", "tents-a", "tents-c")]
        items, truncated = ledger_page(lines, item_prefix="tents", limit=2)
        assert [i.item_id for i in items] == ["tents-a", "tents-b"] and truncated
        items, truncated = ledger_page(lines, item_prefix="tents", limit=3)
        assert len(items) == 3 and not truncated
        assert ledger_page(lines, item_prefix="none", limit=5) == ([], False)
