"""The whole-fleet benchmark's figures (bench/fleet_bench.py): per-host CPU, the 100k-host
extrapolation and what bounds the rate, computed from the measured phases. No measurement
here: bench/report.py uses it too, on the saved figures."""

from __future__ import annotations

import math

TARGET_HOSTS = 100_000
HOUR = 3600.0
PRODUCTION_INTERVAL = 30.0  # PROFILE_RECONCILE_INTERVAL's default (profile_processor/settings.py)
PRODUCT = ("processor", "mdm_endpoint", "scep_proxy", "admin_config", "postgresql")
LABELS = {"processor": "profile-processor", "mdm_endpoint": "mdm-endpoint",
          "scep_proxy": "scep-proxy", "admin_config": "admin-config",
          "postgresql": "PostgreSQL", "ca": "the CA (scepserver)",
          "hosts": "the hosts (this process, scepclient runs)"}


def analyse(phases: dict[str, dict], ca_rate: float, cores: int,
            reconcile_interval: float) -> dict:
    """Per host figures, the 100k extrapolation and the first bottleneck, from the phases.
    Linear: each host costs the same CPU and rows whatever the fleet's size. The reconcile
    passes' standing cost (the idle phase: CPU per host per second while nothing is due) is
    taken out of the phase to verified, whose length grows with the fleet, and given apart."""
    reach, hourly, checkin, idle = (phases["verified"], phases["hourly"], phases["checkin"],
                                    phases["idle"])

    def per_host(phase: dict, key: str = "cpu_seconds") -> dict[str, float]:
        return {k: v / phase["hosts"] for k, v in phase[key].items()}

    standing = {k: v / idle["seconds"] for k, v in per_host(idle).items()}  # per host per second
    gross = per_host(reach)
    to_verified = {k: max(0.0, v - standing.get(k, 0) * reach["seconds"])
                   for k, v in gross.items()}
    per_round = {k: max(0.0, v - standing.get(k, 0) * hourly["seconds"])
                 for k, v in per_host(hourly).items()}
    at_checkin = per_host(checkin)
    # What grows with the fleet: the processor and its queries (each pass's scope queries read
    # every host); the other services' idle CPU (outbox relays, health and metrics) is fixed.
    idle_pg = idle.get("postgresql_cpu_seconds_by_service", {})
    standing_100k = {
        "processor": standing.get("processor", 0) * TARGET_HOSTS,
        "postgresql": idle_pg.get("processor", 0) / idle["seconds"] / idle["hosts"] * TARGET_HOSTS}
    fixed_idle = {k: idle["cpu_seconds"].get(k, 0) / idle["seconds"] for k in PRODUCT}
    fixed_idle["processor"] = 0.0
    fixed_idle["postgresql"] = (sum(idle_pg.values()) - idle_pg.get("processor", 0)) \
        / idle["seconds"]
    scale = reconcile_interval / PRODUCTION_INTERVAL
    # A host reaching verified for the first time: its check-in and its delivery.
    first_time = {k: to_verified.get(k, 0) + at_checkin.get(k, 0) for k in to_verified}
    product = sum(first_time.get(k, 0) for k in PRODUCT)
    at_ca = {k: first_time.get(k, 0) * ca_rate for k in PRODUCT}
    first = max(at_ca, key=at_ca.get)
    # Each program is Python, one core at most per process (the GIL): the processes (replicas
    # or gunicorn workers) each needs at the CA's rate.
    idle_programs = {k: v / idle["seconds"] for k, v in per_host(idle, "program_cpu_seconds").items()}
    programs = {k: (max(0.0, per_host(reach, "program_cpu_seconds").get(k, 0)
                        - idle_programs.get(k, 0) * reach["seconds"])
                    + per_host(checkin, "program_cpu_seconds").get(k, 0))
                for k in reach["program_cpu_seconds"] if k not in ("ca", "postgresql", "hosts")}
    program_cores = {k: round(v * ca_rate, 2) for k, v in programs.items()}
    busiest = max(programs, key=programs.get)
    # On this machine everything (stack, PostgreSQL, CA, hosts) shares the cores.
    everything = sum(gross.values())
    used = sum(reach["cpu_seconds"].values()) / reach["seconds"]
    others = max(0.0, reach["machine_busy_cpu_seconds"] - sum(reach["cpu_seconds"].values()))
    hourly_cores = {k: per_round.get(k, 0) * TARGET_HOSTS / HOUR for k in PRODUCT}
    steady = reach.get("steady_hosts_per_second")
    pg_by = {k: (reach.get("postgresql_cpu_seconds_by_service", {}).get(k, 0)
                 + checkin.get("postgresql_cpu_seconds_by_service", {}).get(k, 0))
             / reach["hosts"] for k in set(reach.get("postgresql_cpu_seconds_by_service", {}))
             | set(checkin.get("postgresql_cpu_seconds_by_service", {}))}
    return {
        "reconcile_interval": reconcile_interval,
        "cpu_ms_per_host_gross": {k: round(1000 * v, 2) for k, v in gross.items()},
        "cpu_ms_per_host_net": {k: round(1000 * v, 2) for k, v in to_verified.items()},
        "cpu_ms_per_host_per_hour_standing": {k: round(1000 * HOUR * v, 2)
                                              for k, v in standing.items()},
        "standing_cores_100k": {k: round(v, 2) for k, v in standing_100k.items()},
        "standing_cores_100k_product": round(sum(standing_100k.values()), 2),
        "fixed_idle_cores": {k: round(v, 3) for k, v in fixed_idle.items()},
        "standing_cores_100k_production": round(sum(standing_100k.values()) * scale, 2),
        "postgresql_cpu_ms_per_host_by_service": {k: round(1000 * v, 2) for k, v in sorted(
            pg_by.items(), key=lambda kv: -kv[1])},
        "cpu_ms_per_host_to_verified": {k: round(1000 * v, 2) for k, v in to_verified.items()},
        "cpu_ms_per_host_checkin": {k: round(1000 * v, 2) for k, v in at_checkin.items()},
        "cpu_ms_per_host_per_hour": {k: round(1000 * v, 2) for k, v in per_round.items()},
        "product_cpu_ms_per_host": round(1000 * product, 2),
        "product_cpu_ms_per_host_per_hour": round(
            1000 * sum(per_round.get(k, 0) for k in PRODUCT), 2),
        "cores_at_ca_rate": {k: round(v, 2) for k, v in at_ca.items()},
        "product_cores_at_ca_rate": round(sum(at_ca.values()), 2),
        "first_bottleneck": first,
        "program_cpu_ms_per_host": {k: round(1000 * v, 2) for k, v in programs.items()},
        "program_cores_at_ca_rate": program_cores,
        "busiest_program": busiest,
        "busiest_program_hosts_per_second_per_process": round(1 / programs[busiest], 1)
        if programs[busiest] else None,
        "machine_bound_hosts_per_second": round(cores / everything, 1) if everything else None,
        "cores_used_to_verified": round(used, 2),
        "other_jobs_cores_to_verified": round(others / reach["seconds"], 2),
        "hourly_cores_100k": {k: round(v, 3) for k, v in hourly_cores.items()},
        "product_hourly_cores_100k": round(sum(hourly_cores.values()), 3),
        "hours_to_verify_100k_at_ca_rate": round(TARGET_HOSTS / ca_rate / HOUR, 2),
        "hours_to_verify_100k_at_measured_rate": round(TARGET_HOSTS / steady / HOUR, 2)
        if steady else None,
        "product_core_hours_100k": round(TARGET_HOSTS * product / HOUR, 2),
    }


def _ms(value: float) -> str:
    return f"{value:.1f} ms"


def what_bounds(figures: dict) -> str:
    """A paragraph: what bounded the rate here, what the product needs at the CA's rate and
    what moving its first bottleneck takes; every number from `figures` (fleet_bench's JSON)."""
    reach, hourly = figures["phases"]["verified"], figures["phases"]["hourly"]
    cap, own, cores = figures["ca_rate"], figures.get("ca_own_rate"), figures["cores"]
    steady = reach.get("steady_hosts_per_second") or reach["hosts_per_second"]
    issued = reach.get("ca_issued_per_second")
    parts = [f"{reach['hosts']:,} hosts reached `verified` in {reach['seconds']:.0f} s, "
             f"{steady:.1f} hosts/s while 10–90 % of them got there; the CA issued "
             f"{issued if issued is not None else '?'} certificates/s meanwhile (its capacity "
             f"{cap:g}/s" + (f"; {own:g}/s straight from 8 scepclients with no product in "
                             "between" if own is not None else "") + ")."]
    ca_bound = min(cap, own or cap)
    if steady >= 0.9 * ca_bound:
        parts.append("The CA bounded it, as it should.")
    else:
        everything = sum(figures["cpu_ms_per_host_gross"].values())
        parts.append(
            f"Not the CA: this machine. While the fleet got there, the bench's processes used "
            f"{figures['cores_used_to_verified']:.2f} of its {cores} cores (other jobs "
            f"{figures['other_jobs_cores_to_verified']:.2f} more); everything on the path "
            f"(stack, PostgreSQL, CA, hosts and their scepclient runs) costs {_ms(everything)} of "
            f"CPU per host beyond check-in, so {cores} cores cannot verify more than "
            f"{figures['machine_bound_hosts_per_second']:.0f} hosts/s, whatever the CA."
            + (f" The CA itself reaches only {own:g}/s here when scepclients on this machine "
               "drive it." if own is not None and own < 0.9 * cap else ""))
    at_ca = figures["cores_at_ca_rate"]
    ranked = sorted(at_ca.items(), key=lambda kv: -kv[1])
    first = figures["first_bottleneck"]
    parts.append(
        f"At {cap:g} certificates/s the product needs {figures['product_cores_at_ca_rate']:.2f} "
        f"cores ({_ms(figures['product_cpu_ms_per_host'])} of CPU per host, check-in included, "
        "the reconcile passes' standing cost not: "
        + ", ".join(f"{LABELS[k]} {v:.2f}" for k, v in ranked)
        + f"): the first bottleneck is {LABELS[first]} ({at_ca[first]:.2f} cores).")
    pg_by = figures.get("postgresql_cpu_ms_per_host_by_service")
    if pg_by:
        parts.append("PostgreSQL's CPU per host by the service whose queries it ran: " + ", ".join(
            f"{LABELS.get(k, k)} {_ms(v)}" for k, v in pg_by.items()) + ".")
    if reach.get("ca_done_seconds") is not None and reach["hosts"]:
        parts.append(
            f"The CA had issued every certificate {reach['ca_done_seconds']:.0f} s in, with "
            f"{reach['verified_when_ca_done']:,} of {reach['hosts']:,} hosts verified; the rest "
            f"took {reach['seconds_after_ca_done']:.0f} s more: the path after the CA "
            "(the hosts' answers, the processor's handling of them) "
            + ("lagged behind it." if reach["verified_when_ca_done"] < 0.9 * reach["hosts"]
               else "kept up with it."))
    active = reach.get("postgresql_active_queries") or []
    if active:
        top = active[0]
        parts.append(f"PostgreSQL's backends were most often seen running "
                     f"{LABELS.get(top['service'], top['service'])}'s `{top['query']}` "
                     f"({100 * top['share']:.0f} % of the samples).")
    if reach.get("postgresql_slot_waits"):
        parts.append(f"Apart from those, {100 * reach['postgresql_slot_waits']:.0f} % of the "
                     "samples were scep-proxy's requests queued for the CA's slots (a session "
                     "waiting in pg_advisory_lock: the CA's queue, not PostgreSQL's work).")
    waits = reach.get("postgresql_lock_waits") or {}
    if waits:
        parts.append("Backends seen waiting for a lock (another transaction's rows): " + ", ".join(
            f"{LABELS.get(k, k)}'s queries {100 * v:.0f} % of the samples"
            for k, v in sorted(waits.items(), key=lambda kv: -kv[1])) + ".")
    busiest = figures["busiest_program"]
    program_ms = figures["program_cpu_ms_per_host"][busiest]
    per_process = figures.get("busiest_program_hosts_per_second_per_process")
    if per_process:
        parts.append(
            f"The busiest single program is `{busiest}` ({_ms(program_ms)} per host): one "
            f"process (one core at most, by the GIL) keeps up with {per_process:.0f} hosts/s, "
            f"so {cap:g}/s takes {math.ceil(cap / per_process)} of them.")
    moves = [f"`{p}` × {math.ceil(ms * cap / 1000)}" for p, ms in sorted(
        figures["program_cpu_ms_per_host"].items(), key=lambda kv: -kv[1]) if ms * cap >= 500]
    tables = figures.get("tables", [])
    first_mb = sum(t["mb_per_100k_hosts"] for t in tables)
    hourly_mb = sum(t["mb_per_100k_hosts"] for t in figures.get("hourly_tables", []))
    largest = ", ".join(f"{t['table']} {t['mb_per_100k_hosts']:,.0f} MB"
                        for t in tables[:3])
    parts.append(
        "Moving it: processes (replicas or gunicorn workers) at that rate: "
        + (", ".join(moves) if moves else "none needs more than one")
        + f"; PostgreSQL {at_ca['postgresql']:.2f} cores, and the first verification of "
        f"{TARGET_HOSTS:,} hosts adds about {first_mb:,.0f} MB to its tables (linear from "
        f"{reach['hosts']:,} hosts; largest: {largest}), each hourly round about "
        f"{hourly_mb:,.0f} MB more until retention prunes it"
        + (f" (shared_buffers here: {figures['shared_buffers_mb']:,} MB, "
           + ("less than that: PostgreSQL then reads and writes them through the OS cache and "
              "the disk, sized by RAM and IOPS rather than cores)"
              if figures["shared_buffers_mb"] < first_mb else "more than that)")
           if figures.get("shared_buffers_mb") else "") + ".")
    parts.append(
        f"Apart from the rate, the processor's reconcile passes scan the fleet every "
        f"PROFILE_RECONCILE_INTERVAL: measured idle here (passes every "
        f"{figures['reconcile_interval']:g} s) and scaled linearly in hosts (an upper bound: part "
        f"of it is fixed), {TARGET_HOSTS:,} hosts would keep "
        f"{figures['standing_cores_100k_product']:.2f} cores busy ("
        + ", ".join(f"{LABELS[k]} {v:.2f}" for k, v in sorted(
            figures["standing_cores_100k"].items(), key=lambda kv: -kv[1]) if v >= 0.005)
        + f"); at the production default of {PRODUCTION_INTERVAL:g} s, "
        f"{figures['standing_cores_100k_production']:.2f} cores (scaled by the number of "
        "passes). The other services' idle CPU does not grow with the fleet: "
        + ", ".join(f"{LABELS[k]} {v:.2f}" for k, v in figures["fixed_idle_cores"].items()
                    if v >= 0.005) + " cores.")
    commands = hourly.get("commands", {})
    per_host_commands = sum(commands.values()) / hourly["hosts"] if commands else 0
    parts.append(
        f"Hourly verification of {TARGET_HOSTS:,} hosts ({per_host_commands:.0f} commands per "
        f"host: {', '.join(commands) or '?'}; {_ms(figures['product_cpu_ms_per_host_per_hour'])} "
        f"of product CPU per host) averages {figures['product_hourly_cores_100k']:.2f} cores ("
        + ", ".join(f"{LABELS[k]} {v:.2f}" for k, v in sorted(
            figures["hourly_cores_100k"].items(), key=lambda kv: -kv[1]))
        + f"), {TARGET_HOSTS * per_host_commands / HOUR:.0f} commands/s.")
    return " ".join(parts)
