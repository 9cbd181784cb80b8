"""`physlearn control pause|resume|abort RUN`: send a command to a run through its MQTT broker, with
the operator's own credentials (docs/telemetry.md).

The command goes to ``<prefix>/<bench>/<RUN>/control/<username>`` (QoS 1, MQTT 5): the broker's
ACL lets a user publish only under their own name, so the run knows who sent it. The bench is
found from the run's retained ``status`` unless ``--bench`` names it. The broker's refusal (MQTT
5 reason code, e.g. "Not authorized" for a viewer) and the run's answer on ``events`` (accepted,
or refused and why) are printed; ``--wait`` also waits for the run to reach the state the
command asks for (paused, running, stopped).

Exit status: 0 accepted (and reached, with --wait); 1 refused by the broker or the run, or no
answer in time; 2 bad arguments or no connection.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from physlearn.errors import ConfigError
from physlearn.telemetry.config import Broker, broker_from_url, read_password, tls_context
from physlearn.telemetry.link import describe_mqtt_error
from physlearn.telemetry.payloads import COMMANDS, command_payload

__all__ = ["add_broker_arguments", "broker_from_args"]

#: the state a command asks the run to reach (``--wait``)
TARGET_STATE = {"pause": "paused", "resume": "running", "abort": "stopped"}


def add_broker_arguments(p: argparse.ArgumentParser) -> None:
    """The broker and credential options of `control` and `watch`."""
    p.add_argument(
        "--broker",
        default=os.environ.get("PHYSLEARN_BROKER"),
        help="mqtt://HOST[:PORT] or mqtts://HOST[:PORT] (default $PHYSLEARN_BROKER)",
    )
    p.add_argument("--ca-file", type=Path, default=None, help="CA certificate (mqtts://)")
    p.add_argument(
        "--username",
        default=os.environ.get("PHYSLEARN_MQTT_USER"),
        help="your broker user (default $PHYSLEARN_MQTT_USER)",
    )
    p.add_argument(
        "--password-env",
        default="PHYSLEARN_MQTT_PASSWORD",
        help="environment variable holding your password (default PHYSLEARN_MQTT_PASSWORD)",
    )
    p.add_argument("--password-file", type=Path, default=None, help="file holding your password")
    p.add_argument("--prefix", default="physlearn", help="topic prefix (default physlearn)")


def broker_from_args(args: argparse.Namespace) -> Broker:
    if not args.broker:
        raise ConfigError("no broker: give --broker mqtt://HOST[:PORT] (or set PHYSLEARN_BROKER)")
    try:
        b = broker_from_url(args.broker)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if args.ca_file is not None and not b.tls:
        raise ConfigError("--ca-file applies to an mqtts:// broker")
    password = None
    if args.username:
        env = args.password_env if args.password_file is None else None
        if env is not None and env not in os.environ:
            password = None
        else:
            password = read_password(env, args.password_file)
    ca = args.ca_file.resolve() if args.ca_file is not None else None
    return Broker(b.host, b.port, b.tls, ca, args.username, password)


def add_parser(sub: Any, name: str) -> None:
    p = sub.add_parser(
        name,
        help="pause, resume or abort a run through its MQTT broker",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("action", choices=COMMANDS, help="pause, resume or abort")
    p.add_argument("run", help="the run id (its run directory's name)")
    p.add_argument("--bench", default=None, help="the bench topic level (default: found)")
    p.add_argument("--reason", default="", help="why (shown in the run's events)")
    p.add_argument("--wait", action="store_true", help="wait until the run reaches the state")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for answers")
    add_broker_arguments(p)


def run(args: argparse.Namespace) -> int:
    broker = broker_from_args(args)
    try:
        return asyncio.run(_control(args, broker))
    except ConnectionError as exc:
        print(f"physlearn control: {exc}", file=sys.stderr)
        return 2


async def _find_bench(client: Any, prefix: str, run_id: str, timeout: float) -> dict[str, Any]:
    """The run's retained status (its bench, its state)."""
    await client.subscribe(f"{prefix}/+/{run_id}/status", qos=1)
    try:
        async with asyncio.timeout(min(timeout, 5.0)):
            async for m in client.messages:
                if str(m.topic).endswith(f"/{run_id}/status"):
                    data = json.loads(bytes(m.payload))
                    await client.unsubscribe(f"{prefix}/+/{run_id}/status")
                    return {"bench": str(m.topic).split("/")[-3], **data}
    except TimeoutError:
        pass
    raise ConnectionError(
        f"no run {run_id!r} on the broker (no retained status under {prefix}/+/{run_id}/); "
        "give --bench if it has not published yet"
    )


def _checked_publish(client: Any) -> dict[int, Any]:
    """Record the PUBACK reason code of each publish (MQTT 5: a refusal has a code ≥ 0x80).
    aiomqtt does not return it: the paho client's ``on_publish`` is wrapped."""
    paho = client._client  # aiomqtt's underlying paho-mqtt client
    codes: dict[int, Any] = {}
    original = paho.on_publish

    def on_publish(c: Any, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        codes[mid] = reason_code
        original(c, userdata, mid, reason_code, properties)

    paho.on_publish = on_publish
    return codes


async def _control(args: argparse.Namespace, broker: Broker) -> int:
    import aiomqtt

    try:
        client = aiomqtt.Client(
            broker.host,
            broker.port,
            username=broker.username,
            password=broker.password,
            protocol=aiomqtt.ProtocolVersion.V5,
            tls_context=tls_context(broker),
            timeout=10,
        )
        async with client:
            return await _send(client, args, broker)
    except aiomqtt.MqttError as exc:
        raise ConnectionError(describe_mqtt_error(exc, broker)) from None


async def _send(client: Any, args: argparse.Namespace, broker: Broker) -> int:
    run_id, prefix = args.run, args.prefix
    bench = args.bench or (await _find_bench(client, prefix, run_id, args.timeout))["bench"]
    root = f"{prefix}/{bench}/{run_id}"
    await client.subscribe(f"{root}/events", qos=1)
    await client.subscribe(f"{root}/status", qos=1)
    user = broker.username or "anonymous"
    payload = command_payload(run_id, args.action, args.reason)
    nonce = json.loads(payload)["nonce"]
    codes = _checked_publish(client)
    await client.publish(f"{root}/control/{user}", payload, qos=1)
    rc = next(iter(codes.values()), None)
    if rc is not None and getattr(rc, "is_failure", False):
        print(
            f"physlearn control: the broker refused {user!r} publishing to {root}/control/{user}:"
            f" {rc} (the broker's ACL must let this user command the run)",
            file=sys.stderr,
        )
        return 1
    return await _answer(client, args, nonce, user)


async def _answer(client: Any, args: argparse.Namespace, nonce: str, user: str) -> int:
    """Wait for the run's acknowledgement (and with --wait, for its state)."""
    accepted, state = False, None
    target = TARGET_STATE[args.action]
    end = time.monotonic() + args.timeout
    try:
        async with asyncio.timeout(args.timeout):
            async for m in client.messages:
                try:
                    data = json.loads(bytes(m.payload))
                except ValueError:
                    continue
                if data.get("type") == "status":
                    state = data.get("state")
                if data.get("type") == "event" and data.get("nonce") == nonce:
                    if data.get("kind") == "command_refused":
                        print(
                            f"physlearn control: refused by the run: {data.get('reason')}",
                            file=sys.stderr,
                        )
                        return 1
                    if data.get("kind") == "command":
                        accepted = True
                        print(
                            f"{args.action} accepted by run {args.run} (from {user}); "
                            "acted on at the next step boundary"
                        )
                        if not args.wait:
                            return 0
                        if state == target:  # already there (e.g. pause while paused)
                            print(f"run {args.run} is {target}")
                            return 0
                elif accepted and data.get("type") == "status" and data.get("state") == target:
                    print(
                        f"run {args.run} is {target} (epoch {data.get('epoch')}, step "
                        f"{data.get('step')})"
                    )
                    return 0
    except TimeoutError:
        pass
    what = "reached the state" if accepted else "answered"
    print(
        f"physlearn control: the run has not {what} within {args.timeout:g} s "
        f"({time.monotonic() - end + args.timeout:.0f} s)",
        file=sys.stderr,
    )
    return 1
