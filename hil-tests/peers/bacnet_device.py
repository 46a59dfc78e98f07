#!/usr/bin/env python3
"""A third-party BACnet/IP device for Gatehouse's tests, served by BACpypes3 0.0.110.

The device listens on 127.0.0.1:PORT (UDP; `--port 0` lets the system choose) as device
instance INSTANCE, and holds:

    analog-input,1       zone-temperature     present-value 21.5 (Real), COV increment 0.5
    binary-input,1       lobby-door-contact   present-value inactive
    binary-output,1      lobby-door-lock      commandable (priority-array), relinquish-default inactive
    multi-state-value,1  building-mode        present-value 1 of 3 states

It answers Who-Is, ReadProperty(Multiple), WriteProperty and SubscribeCOV as BACpypes3 does,
and sends COV notifications to subscribers when a value changes. Only unicast is served
(no broadcast socket): on loopback a client sends Who-Is straight to the port. With `--bbmd`
the port is also a BBMD that accepts Register-Foreign-Device (its distribution table empty);
without it, BACpypes3 answers a registration with BVLC-Result register-foreign-device-nak.

A test drives the device through stdin, one command a line; every command answers one line
on stdout:

    set_ai VALUE              -> ok       analog-input,1 present-value (a number)
    set_bi active|inactive    -> ok       binary-input,1 present-value
    set_msv N                 -> ok       multi-state-value,1 present-value (1..3)
    get_bo                    -> active|inactive   binary-output,1 present-value
    get_bo_priority N         -> null|active|inactive   slot N (1..16) of its priority-array
    quit                      -> (exits; so does end of input)

A bad command answers `error MESSAGE` and the device keeps running. Once listening the script
prints `ready PORT`. BACpypes3 logs to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from bacpypes3.app import Application
from bacpypes3.basetypes import BinaryPV, EngineeringUnits, EventState, IPMode, StatusFlags
from bacpypes3.local.analog import AnalogInputObject
from bacpypes3.local.binary import BinaryInputObject, BinaryOutputObject
from bacpypes3.local.device import DeviceObject
from bacpypes3.local.multistate import MultiStateValueObject
from bacpypes3.local.networkport import NetworkPortObject

VENDOR_IDENTIFIER = 999  # BACpypes' own vendor id


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True, help="UDP port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--instance", type=int, default=1234, help="device object instance; default 1234")
    parser.add_argument(
        "--bbmd",
        action="store_true",
        help="also be a BBMD that accepts foreign device registrations (an empty distribution table)",
    )
    return parser.parse_args()


def network_port(port: int, bbmd: bool) -> NetworkPortObject:
    """The device's B/IP port on 127.0.0.1, optionally a BBMD."""
    network_port = NetworkPortObject(
        f"127.0.0.1/32:{port}",
        objectIdentifier=("network-port", 1),
        objectName="NetworkPort-1",
    )
    if bbmd:
        network_port.bacnetIPMode = IPMode.bbmd
        network_port.bbmdAcceptFDRegistrations = True
        network_port.bbmdBroadcastDistributionTable = []
        network_port.bbmdForeignDeviceTable = []
    return network_port


def build_objects(instance: int, port: int, bbmd: bool) -> list:
    status = StatusFlags([0, 0, 0, 0])
    return [
        DeviceObject(
            objectIdentifier=("device", instance),
            objectName="gatehouse-test-device",
            vendorIdentifier=VENDOR_IDENTIFIER,
        ),
        network_port(port, bbmd),
        AnalogInputObject(
            objectIdentifier=("analog-input", 1),
            objectName="zone-temperature",
            presentValue=21.5,
            statusFlags=status,
            eventState=EventState.normal,
            outOfService=False,
            units=EngineeringUnits.degreesCelsius,
            covIncrement=0.5,
        ),
        BinaryInputObject(
            objectIdentifier=("binary-input", 1),
            objectName="lobby-door-contact",
            presentValue=BinaryPV.inactive,
            statusFlags=status,
            eventState=EventState.normal,
            outOfService=False,
        ),
        BinaryOutputObject(
            objectIdentifier=("binary-output", 1),
            objectName="lobby-door-lock",
            presentValue=BinaryPV.inactive,
            relinquishDefault=BinaryPV.inactive,
            statusFlags=status,
            eventState=EventState.normal,
            outOfService=False,
        ),
        MultiStateValueObject(
            objectIdentifier=("multi-state-value", 1),
            objectName="building-mode",
            presentValue=1,
            numberOfStates=3,
            statusFlags=status,
            eventState=EventState.normal,
            outOfService=False,
        ),
    ]


def execute(objects: dict, line: str) -> str:
    """Run one command line and return the answer line."""
    words = line.split()
    if not words:
        return "error empty command"
    verb, arguments = words[0], words[1:]
    try:
        if verb == "set_ai" and len(arguments) == 1:
            objects["analog-input,1"].presentValue = float(arguments[0])
        elif verb == "set_bi" and len(arguments) == 1 and arguments[0] in ("active", "inactive"):
            objects["binary-input,1"].presentValue = BinaryPV(arguments[0])
        elif verb == "set_msv" and len(arguments) == 1:
            objects["multi-state-value,1"].presentValue = int(arguments[0])
        elif verb == "get_bo" and not arguments:
            return str(objects["binary-output,1"].presentValue)
        elif verb == "get_bo_priority" and len(arguments) == 1:
            slot = int(arguments[0])
            if not 1 <= slot <= 16:
                return f"error priority {slot} outside 1..16"
            value = objects["binary-output,1"].priorityArray[slot - 1]
            return "null" if value.null is not None else str(value.enumerated)
        else:
            return f"error unknown command: {line!r}"
    except (ValueError, TypeError) as error:
        return f"error {error}"
    return "ok"


async def main() -> None:
    args = parse_args()
    object_list = build_objects(args.instance, args.port, args.bbmd)
    app = Application.from_object_list(object_list)
    objects = {str(obj.objectIdentifier): obj for obj in object_list}
    [link_layer] = app.link_layers.values()
    server = link_layer.server
    await server._local_transport_ready.wait()
    port = server.local_transport.get_extra_info("sockname")[1]
    print(f"ready {port}", flush=True)

    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line or line.strip() == "quit":
            break
        print(execute(objects, line.strip()), flush=True)
    app.close()


if __name__ == "__main__":
    asyncio.run(main())
