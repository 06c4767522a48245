"""Which hosts a profile is for (profile_processor/scopes.py), from the read models the events
feed: teams, manual and dynamic labels, the three label rules, and what the reconcile pass does
when a host's scope changes (DeliveryStore.add_missing_deliveries / remove_out_of_scope)."""

from __future__ import annotations

import itertools
import uuid

import pytest

from mdmscep_common import bus, config_events, label_criteria
from profile_processor import read_models
from profile_processor.store import DeliveryStore

_sequence = itertools.count(1000)
store = DeliveryStore()


def _profile(conn, team_id=None, **labels) -> str:
    profile_uuid = str(uuid.uuid4())
    row = {"uuid": profile_uuid, "identifier": f"com.example.{profile_uuid}", "name": "P",
           "raw": b"<plist/>", "checksum": b"\x01" * 32, "has_scep_payload": False,
           "ca_ids": [], "team_id": team_id, "labels": labels}
    assert read_models.apply_config_change(conn, {
        "kind": config_events.PROFILE, "action": "added", "profile_uuid": profile_uuid,
        "sequence": next(_sequence), "profile": config_events.profile_state(row)})
    return profile_uuid


def _label(conn, label_id: int, hosts=(), criteria=None) -> int:
    assert read_models.apply_config_change(conn, {
        "kind": config_events.LABEL, "action": "added", "id": label_id, "sequence": next(_sequence),
        "label": config_events.label_state(label_id, f"L{label_id}", criteria, list(hosts))})
    return label_id


def _host(conn, **facts) -> str:
    host = str(uuid.uuid4()).upper()
    read_models.apply_host_event(conn, bus.HOST_ENROLLED, {
        "host_uuid": host, "sequence": next(_sequence), "facts": facts})
    return host


def _transfer(conn, host: str, team_id):
    return read_models.apply_config_change(conn, {
        "kind": config_events.HOST_TEAM, "action": "transferred", "host_uuid": host,
        "sequence": next(_sequence), "host_team": config_events.host_team_state(host, team_id)})


def _deliveries(conn) -> set[tuple[str, str, str]]:
    store.add_missing_deliveries(conn)
    store.remove_out_of_scope(conn)
    return {(r["host_uuid"], r["profile_uuid"], r["operation_type"]) for r in conn.execute(
        "SELECT host_uuid, profile_uuid, operation_type FROM host_profiles")}


def _sent(conn, host: str, profile: str):
    conn.execute("UPDATE host_profiles SET command_uuid = %s WHERE host_uuid = %s "
                 "AND profile_uuid = %s", (str(uuid.uuid4()), host, profile))


def test_a_profile_without_team_goes_to_hosts_without_team_only(db_conn):
    no_team, team_profile = _profile(db_conn), _profile(db_conn, team_id=5)
    alone, member = _host(db_conn), _host(db_conn)
    _transfer(db_conn, member, 5)
    assert _deliveries(db_conn) == {(alone, no_team, "install"), (member, team_profile, "install")}


def test_moving_a_host_to_another_team_removes_what_it_was_sent_and_installs_the_new(db_conn):
    no_team, team_profile = _profile(db_conn), _profile(db_conn, team_id=5)
    host = _host(db_conn)
    assert _deliveries(db_conn) == {(host, no_team, "install")}
    _sent(db_conn, host, no_team)
    _transfer(db_conn, host, 5)
    assert _deliveries(db_conn) == {(host, no_team, "remove"), (host, team_profile, "install")}
    # Back before the RemoveProfile was acknowledged: installed again, with a new command.
    _transfer(db_conn, host, None)
    assert _deliveries(db_conn) == {(host, no_team, "install")}  # the unsent install forgotten
    row = db_conn.execute("SELECT status, command_uuid FROM host_profiles WHERE profile_uuid = %s",
                          (no_team,)).fetchone()
    assert (row["status"], row["command_uuid"]) == ("pending", None)


def test_a_pass_locks_only_the_deliveries_it_adds_or_reinstalls(db_conn):
    """The event handlers update deliveries while passes run: a pass that held a lock on every
    delivery in scope made them wait for it, or deadlock with it."""
    profile = _profile(db_conn)
    hosts = [_host(db_conn) for _ in range(3)]
    _deliveries(db_conn)
    # A row locked (or updated) by a later statement of this transaction gets its xmax set.
    assert store.add_missing_deliveries(db_conn) == 0
    assert db_conn.execute("SELECT count(*) AS n FROM host_profiles "
                           "WHERE xmax::text <> '0'").fetchone()["n"] == 0
    newcomer = _host(db_conn)
    assert store.add_missing_deliveries(db_conn) == 1
    assert db_conn.execute("SELECT count(*) AS n FROM host_profiles "
                           "WHERE xmax::text <> '0'").fetchone()["n"] == 0
    assert {r["host_uuid"] for r in db_conn.execute(
        "SELECT host_uuid FROM host_profiles WHERE profile_uuid = %s", (profile,))} == \
        {*hosts, newcomer}


def test_label_rules(db_conn):
    a, b = _label(db_conn, 1), _label(db_conn, 2)
    in_a, in_b, in_both, in_none = (_host(db_conn) for _ in range(4))
    _label(db_conn, a, hosts=[in_a, in_both])
    _label(db_conn, b, hosts=[in_b, in_both])
    all_of = _profile(db_conn, include_all=[a, b])
    any_of = _profile(db_conn, include_any=[a, b])
    not_a = _profile(db_conn, exclude_any=[a])
    got = _deliveries(db_conn)
    assert {h for h, p, _ in got if p == all_of} == {in_both}
    assert {h for h, p, _ in got if p == any_of} == {in_a, in_b, in_both}
    assert {h for h, p, _ in got if p == not_a} == {in_b, in_none}


def test_a_dynamic_label_follows_the_hosts_facts(db_conn):
    ventura = _host(db_conn, serial_number="C02ABC", os_version="13.6.1", product_name="MacBookPro18,3",
                    platform="darwin")
    phone = _host(db_conn, serial_number="F17XYZ", os_version="17.2", product_name="iPhone15,2",
                  platform="ios")
    sonoma_macs = _label(db_conn, 9, criteria=label_criteria.parse(
        {"platform": "darwin", "os_version_at_least": "14"}))
    profile = _profile(db_conn, include_all=[sonoma_macs])
    assert {h for h, p, _ in _deliveries(db_conn) if p == profile} == set()
    # The Mac is updated: mdm-endpoint publishes its new facts.
    assert read_models.apply_host_event(db_conn, bus.HOST_FACTS_CHANGED, {
        "host_uuid": ventura, "sequence": next(_sequence),
        "facts": {"serial_number": "C02ABC", "os_version": "14.1", "product_name": "MacBookPro18,3",
                  "platform": "darwin"}})
    assert {h for h, p, _ in _deliveries(db_conn) if p == profile} == {ventura}
    assert phone  # never in it
    # A late, older facts event changes nothing.
    assert not read_models.apply_host_event(db_conn, bus.HOST_FACTS_CHANGED, {
        "host_uuid": ventura, "sequence": 1, "facts": {"os_version": "13.0", "platform": "darwin"}})
    assert {h for h, p, _ in _deliveries(db_conn) if p == profile} == {ventura}


def test_deleting_a_label_drops_its_memberships(db_conn):
    host = _host(db_conn)
    label = _label(db_conn, 4, hosts=[host])
    members = "SELECT count(*) AS n FROM label_memberships WHERE label_id = 4"
    assert db_conn.execute(members).fetchone()["n"] == 1
    assert read_models.apply_config_change(db_conn, {
        "kind": config_events.LABEL, "action": "deleted", "id": label, "sequence": next(_sequence),
        "label": None})
    assert db_conn.execute(members).fetchone()["n"] == 0


@pytest.mark.parametrize("criteria, facts, expected", [
    ({"serial_number_prefix": "C02"}, {"serial_number": "C02X"}, True),
    ({"serial_number_prefix": "C02"}, {"serial_number": ""}, False),
    ({"os_version_at_least": "14", "os_version_below": "15"}, {"os_version": "14.10.1"}, True),
    ({"os_version_below": "14.2"}, {"os_version": "14.10"}, False),
    ({"os_version_at_least": "14.0"}, {"os_version": "beta"}, False),
    ({"model": "MacBook Pro"}, {"model": "MacBook Air"}, False),
])
def test_criteria(criteria, facts, expected):
    assert label_criteria.matches(label_criteria.parse(criteria), facts) is expected


@pytest.mark.parametrize("criteria", [{}, {"color": "red"}, {"platform": "windows"},
                                      {"os_version_at_least": "fourteen"},
                                      {"os_version_at_least": "15", "os_version_below": "14"},
                                      {"model": ""}, "platform=darwin"])
def test_criteria_that_cannot_be_a_rule_are_refused(criteria):
    with pytest.raises(label_criteria.InvalidCriteria):
        label_criteria.parse(criteria)
