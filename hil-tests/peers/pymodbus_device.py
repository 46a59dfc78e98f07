#!/usr/bin/env python3
"""A third-party Modbus TCP device for Gatehouse's end-to-end tests, served by pymodbus 3.16.1.

The device listens on 127.0.0.1:PORT as unit id 1 and holds four tables (coils, discrete
inputs, holding registers, input registers), each with protocol addresses 0..SIZE-1, all zero at
start. Reading or writing at SIZE or beyond answers exception 0x02 (Illegal Data Address).

Addressing: the tables are built from pymodbus' `SimData(address=0, ...)`, whose address is the
protocol address itself, so what is set here at address N is what a client reads at N. (The
deprecated `ModbusSequentialDataBlock(address, ...)` of 3.16 subtracts one from its address,
which is why a block there has to start at 1 to mean protocol address 0; this script avoids it.)

A test drives the device through stdin, one command a line; every command answers one line
on stdout:

    set_di ADDR 0|1      -> ok          discrete input
    set_coil ADDR 0|1    -> ok
    set_hr ADDR VALUE    -> ok          holding register, VALUE 0..65535
    set_ir ADDR VALUE    -> ok          input register, VALUE 0..65535
    get_coil ADDR        -> 0|1
    get_hr ADDR          -> VALUE       (get_di, get_ir likewise)
    quit                 -> (exits; so does end of input)

A bad command answers `error MESSAGE` and the device keeps running. Once listening the script
prints `ready PORT` (with `--port 0` the port the system chose). pymodbus logs to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

UNIT_ID = 1

# Command table name -> (function code that selects the table in pymodbus' datastore, is a bit table).
TABLES = {"di": (2, True), "coil": (1, True), "hr": (3, False), "ir": (4, False)}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True, help="TCP port on 127.0.0.1 (0: any free port)")
    parser.add_argument(
        "--size",
        type=int,
        default=128,
        help="addresses per table, a multiple of 16 (pymodbus stores bits in 16-bit words); default 128",
    )
    args = parser.parse_args()
    if args.size <= 0 or args.size % 16 or args.size > 65536:
        parser.error("--size must be a positive multiple of 16, at most 65536")
    return args


def build_device(size: int) -> SimDevice:
    """One unit with four separate tables, protocol addresses 0..size-1 in each."""

    def table(initial: bool | int, datatype: DataType) -> list[SimData]:
        return [SimData(address=0, count=size, values=initial, datatype=datatype)]

    # The order pymodbus expects: coils, discrete inputs, holding registers, input registers.
    return SimDevice(
        id=UNIT_ID,
        simdata=(
            table(False, DataType.BITS),
            table(False, DataType.BITS),
            table(0, DataType.REGISTERS),
            table(0, DataType.REGISTERS),
        ),
    )


async def execute(server: ModbusTcpServer, size: int, line: str) -> str:
    """Run one command line and return the answer line."""
    words = line.split()
    verb, _, table = words[0].partition("_") if words else ("", "", "")
    if verb not in ("set", "get") or table not in TABLES or len(words) != (3 if verb == "set" else 2):
        return f"error unknown command: {line!r}"
    function_code, is_bits = TABLES[table]
    try:
        address = int(words[1])
        if not 0 <= address < size:
            return f"error address {address} outside the table (0..{size - 1})"
        if verb == "get":
            [value] = await server.async_getValues(UNIT_ID, function_code, address, 1)
            return str(int(value))
        value = int(words[2])
        if not 0 <= value <= (1 if is_bits else 0xFFFF):
            return f"error value {value} out of range for {table}"
        await server.async_setValues(UNIT_ID, function_code, address, [bool(value) if is_bits else value])
        return "ok"
    except (ValueError, TypeError) as error:  # ValueError: not a number; TypeError: pymodbus refused
        return f"error {error}"


async def main() -> None:
    args = parse_args()
    server = ModbusTcpServer(build_device(args.size), address=("127.0.0.1", args.port))
    await server.serve_forever(background=True)
    port = server.transport.sockets[0].getsockname()[1]
    print(f"ready {port}", flush=True)

    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line or line.strip() == "quit":
            break
        print(await execute(server, args.size, line.strip()), flush=True)
    await server.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
