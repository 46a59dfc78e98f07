#!/usr/bin/env python3
"""A third-party Modbus device for Gatehouse's end-to-end tests, served by pymodbus 3.16.1.

Over TCP (`--port`) the device listens on 127.0.0.1:PORT as unit id 1. Over a serial line
(`--serial PATH`, e.g. one end of a socat pseudo-terminal pair) it is a Modbus RTU server
answering as each of `--units` (default 1) with the given `--baud`, `--parity` and
`--stop-bits`; a request to any other unit id gets no answer at all, as on a real RS-485 bus.
Each unit holds four tables (coils, discrete inputs, holding registers, input registers), each
with protocol addresses 0..SIZE-1, all zero at start. Reading or writing at SIZE or beyond
answers exception 0x02 (Illegal Data Address).

Addressing: the tables are built from pymodbus' `SimData(address=0, ...)`, whose address is the
protocol address itself, so what is set here at address N is what a client reads at N. (The
deprecated `ModbusSequentialDataBlock(address, ...)` of 3.16 subtracts one from its address,
which is why a block there has to start at 1 to mean protocol address 0; this script avoids it.)

A test drives the device through stdin, one command a line; every command answers one line
on stdout:

    set_di ADDR 0|1 [UNIT]    -> ok          discrete input
    set_coil ADDR 0|1 [UNIT]  -> ok
    set_hr ADDR VALUE [UNIT]  -> ok          holding register, VALUE 0..65535
    set_ir ADDR VALUE [UNIT]  -> ok          input register, VALUE 0..65535
    get_coil ADDR [UNIT]      -> 0|1
    get_hr ADDR [UNIT]        -> VALUE       (get_di, get_ir likewise)
    quit                      -> (exits; so does end of input)

UNIT defaults to the first unit. A bad command answers `error MESSAGE` and the device keeps
running. Once listening the script prints `ready PORT` (with `--port 0` the port the system
chose; 0 on a serial line). pymodbus logs to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from pymodbus import FramerType
from pymodbus.exceptions import NoSuchIdException
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

# Command table name -> (function code that selects the table in pymodbus' datastore, is a bit table).
TABLES = {"di": (2, True), "coil": (1, True), "hr": (3, False), "ir": (4, False)}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    link = parser.add_mutually_exclusive_group(required=True)
    link.add_argument("--port", type=int, help="TCP port on 127.0.0.1 (0: any free port)")
    link.add_argument("--serial", help="serial device to serve Modbus RTU on, e.g. a pty")
    parser.add_argument("--units", default="1", help="comma-separated unit ids (serial only); default 1")
    parser.add_argument("--baud", type=int, default=19200, help="serial speed; default 19200")
    parser.add_argument("--parity", choices="NEO", default="E", help="serial parity N, E or O; default E")
    parser.add_argument("--stop-bits", type=int, choices=(1, 2), default=1, help="serial stop bits; default 1")
    parser.add_argument(
        "--size",
        type=int,
        default=128,
        help="addresses per table, a multiple of 16 (pymodbus stores bits in 16-bit words); default 128",
    )
    args = parser.parse_args()
    if args.size <= 0 or args.size % 16 or args.size > 65536:
        parser.error("--size must be a positive multiple of 16, at most 65536")
    args.units = [int(unit) for unit in args.units.split(",")]
    if args.port is not None and args.units != [1]:
        parser.error("--units is for --serial; the TCP device is unit 1")
    return args


def build_device(unit: int, size: int) -> SimDevice:
    """One unit with four separate tables, protocol addresses 0..size-1 in each."""

    def table(initial: bool | int, datatype: DataType) -> list[SimData]:
        return [SimData(address=0, count=size, values=initial, datatype=datatype)]

    # The order pymodbus expects: coils, discrete inputs, holding registers, input registers.
    return SimDevice(
        id=unit,
        simdata=(
            table(False, DataType.BITS),
            table(False, DataType.BITS),
            table(0, DataType.REGISTERS),
            table(0, DataType.REGISTERS),
        ),
    )


async def execute(server: ModbusTcpServer | ModbusSerialServer, units: list[int], size: int, line: str) -> str:
    """Run one command line and return the answer line."""
    words = line.split()
    verb, _, table = words[0].partition("_") if words else ("", "", "")
    arguments = 3 if verb == "set" else 2
    if verb not in ("set", "get") or table not in TABLES or len(words) not in (arguments, arguments + 1):
        return f"error unknown command: {line!r}"
    function_code, is_bits = TABLES[table]
    try:
        unit = int(words[arguments]) if len(words) > arguments else units[0]
        if unit not in units:
            return f"error unit {unit} is not one of {units}"
        address = int(words[1])
        if not 0 <= address < size:
            return f"error address {address} outside the table (0..{size - 1})"
        if verb == "get":
            [value] = await server.async_getValues(unit, function_code, address, 1)
            return str(int(value))
        value = int(words[2])
        if not 0 <= value <= (1 if is_bits else 0xFFFF):
            return f"error value {value} out of range for {table}"
        await server.async_setValues(unit, function_code, address, [bool(value) if is_bits else value])
        return "ok"
    except (ValueError, TypeError) as error:  # ValueError: not a number; TypeError: pymodbus refused
        return f"error {error}"


def refuse_unknown_units(server: ModbusSerialServer, units: list[int]) -> None:
    """Make a request to a unit that is not here raise NoSuchIdException, which the server
    then ignores. (pymodbus 3.16's simulator answers such a request from its first device,
    or with exception 0x04 when the id is higher; a real RS-485 bus stays silent.)"""
    core = server.context
    for name in ("async_getValues", "async_setValues"):
        original = getattr(core, name)

        async def checked(device_id: int, *args, _original=original, **kwargs):
            if device_id not in units:
                raise NoSuchIdException(f"unit {device_id}")
            return await _original(device_id, *args, **kwargs)

        setattr(core, name, checked)


async def main() -> None:
    args = parse_args()
    devices = [build_device(unit, args.size) for unit in args.units]
    server: ModbusTcpServer | ModbusSerialServer
    if args.serial is None:
        server = ModbusTcpServer(devices[0], address=("127.0.0.1", args.port))
        await server.serve_forever(background=True)
        port = server.transport.sockets[0].getsockname()[1]
    else:
        # ignore_missing_devices: an RTU request to a unit that is not here gets silence, as
        # on a real bus (pymodbus would otherwise answer a gateway exception).
        server = ModbusSerialServer(
            devices,
            framer=FramerType.RTU,
            port=args.serial,
            baudrate=args.baud,
            parity=args.parity,
            stopbits=args.stop_bits,
            ignore_missing_devices=True,
            reconnect_delay=0.2,
        )
        refuse_unknown_units(server, args.units)
        await server.serve_forever(background=True)
        port = 0
    print(f"ready {port}", flush=True)

    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line or line.strip() == "quit":
            break
        print(await execute(server, args.units, args.size, line.strip()), flush=True)
    await server.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
