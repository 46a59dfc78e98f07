//! The simulator's data and the rules it answers a request PDU by, free of I/O.

use std::{
    collections::{BTreeSet, HashMap},
    ops::RangeInclusive,
};

use tokio_modbus::ExceptionCode;

use super::codec::{Request, Table, encode_exception};

/// The tables of every configured unit id, and the injected exceptions.
#[derive(Debug, Default)]
pub(crate) struct Bank {
    /// Unit ids that answer; a request for any other answers `GatewayTargetDevice`.
    units: BTreeSet<u8>,
    /// Values ever written, sparse: an address missing here reads 0. Bits are 0 or 1.
    values: HashMap<(u8, Table, u16), u16>,
    faults: Vec<InjectedException>,
}

/// Requests to `unit` touching `addresses` of `table` answer `code`.
#[derive(Debug)]
struct InjectedException {
    unit: u8,
    table: Table,
    addresses: RangeInclusive<u16>,
    code: ExceptionCode,
}

impl Bank {
    /// Makes `unit` answer requests; its tables read 0 until written.
    pub(crate) fn add_unit(&mut self, unit: u8) {
        self.units.insert(unit);
    }

    /// The value at `address`, 0 or 1 in a bit table.
    pub(crate) fn get(&self, unit: u8, table: Table, address: u16) -> u16 {
        self.values
            .get(&(unit, table, address))
            .copied()
            .unwrap_or(0)
    }

    /// Writes `values` from `start` on, dropping those that would fall past address 65535;
    /// any non-zero value sets a bit. Configures `unit`.
    pub(crate) fn write(&mut self, unit: u8, table: Table, start: u16, values: &[u16]) {
        self.add_unit(unit);
        for (address, &value) in (start..=u16::MAX).zip(values) {
            let value = if table.is_bits() {
                u16::from(value != 0)
            } else {
                value
            };
            self.values.insert((unit, table, address), value);
        }
    }

    /// Makes requests touching `addresses` of `table` on `unit` answer `code`. Configures `unit`.
    pub(crate) fn inject_exception(
        &mut self,
        unit: u8,
        table: Table,
        addresses: RangeInclusive<u16>,
        code: ExceptionCode,
    ) {
        self.add_unit(unit);
        self.faults.push(InjectedException {
            unit,
            table,
            addresses,
            code,
        });
    }

    /// Removes every injected exception.
    pub(crate) fn clear_exceptions(&mut self) {
        self.faults.clear();
    }

    /// The response PDU to a request PDU for `unit`: data, or an exception.
    pub(crate) fn answer(&mut self, unit: u8, pdu: &[u8]) -> Vec<u8> {
        self.execute(unit, pdu)
            .unwrap_or_else(|code| encode_exception(pdu.first().copied().unwrap_or_default(), code))
    }

    fn execute(&mut self, unit: u8, pdu: &[u8]) -> Result<Vec<u8>, ExceptionCode> {
        if !self.units.contains(&unit) {
            return Err(ExceptionCode::GatewayTargetDevice);
        }
        let request = Request::decode(pdu)?;
        let (table, addresses) = (request.table(), request.addresses());
        if let Some(fault) = self.faults.iter().find(|fault| {
            fault.unit == unit
                && fault.table == table
                && fault.addresses.start() <= addresses.end()
                && addresses.start() <= fault.addresses.end()
        }) {
            return Err(fault.code);
        }
        let read_values: Vec<u16> = match &request {
            Request::Read { .. } => addresses
                .map(|address| self.get(unit, table, address))
                .collect(),
            Request::Write { start, values, .. } => {
                self.write(unit, table, *start, values);
                Vec::new()
            }
        };
        Ok(request.encode_response(&read_values))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_was_written_and_zero_elsewhere() {
        let mut bank = Bank::default();
        bank.write(1, Table::HoldingRegisters, 10, &[0xBEEF, 7]);
        bank.write(1, Table::Coils, 3, &[5]);
        assert_eq!(
            bank.answer(1, &[0x03, 0, 9, 0, 4]),
            [0x03, 8, 0, 0, 0xBE, 0xEF, 0, 7, 0, 0]
        );
        assert_eq!(
            bank.answer(1, &[0x01, 0, 0, 0, 9]),
            [0x01, 2, 0b0000_1000, 0]
        );
        assert_eq!(
            bank.get(1, Table::Coils, 3),
            1,
            "a non-zero bit is stored as 1"
        );
        assert_eq!(
            bank.get(1, Table::InputRegisters, 10),
            0,
            "tables are separate"
        );
    }

    #[test]
    fn client_writes_change_the_bank() {
        let mut bank = Bank::default();
        bank.add_unit(2);
        assert_eq!(
            bank.answer(2, &[0x06, 0, 4, 0x12, 0x34]),
            [0x06, 0, 4, 0x12, 0x34]
        );
        assert_eq!(bank.get(2, Table::HoldingRegisters, 4), 0x1234);
        bank.answer(2, &[0x0F, 0, 0, 0, 3, 1, 0b101]);
        let coils: Vec<u16> = (0..3).map(|a| bank.get(2, Table::Coils, a)).collect();
        assert_eq!(coils, [1, 0, 1]);
        bank.answer(2, &[0x05, 0, 0, 0, 0]);
        assert_eq!(bank.get(2, Table::Coils, 0), 0);
    }

    #[test]
    fn unknown_units_and_injected_ranges_answer_exceptions() {
        let mut bank = Bank::default();
        assert_eq!(bank.answer(9, &[0x03, 0, 0, 0, 1]), [0x83, 0x0B]);
        bank.inject_exception(
            1,
            Table::HoldingRegisters,
            100..=109,
            ExceptionCode::IllegalDataAddress,
        );
        assert_eq!(
            bank.answer(1, &[0x03, 0, 95, 0, 5]),
            [0x03, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(
            bank.answer(1, &[0x03, 0, 95, 0, 6]),
            [0x83, 0x02],
            "touches 100"
        );
        assert_eq!(
            bank.answer(1, &[0x10, 0, 109, 0, 1, 2, 0, 1]),
            [0x90, 0x02],
            "touches 109"
        );
        assert_eq!(
            bank.get(1, Table::HoldingRegisters, 109),
            0,
            "a refused write changes nothing"
        );
        assert_eq!(
            bank.answer(1, &[0x04, 0, 100, 0, 1]),
            [0x04, 2, 0, 0],
            "other table"
        );
        bank.clear_exceptions();
        assert_eq!(bank.answer(1, &[0x03, 0, 100, 0, 1]), [0x03, 2, 0, 0]);
    }

    #[test]
    fn writes_stop_at_the_last_address() {
        let mut bank = Bank::default();
        bank.write(1, Table::HoldingRegisters, u16::MAX, &[1, 2]);
        assert_eq!(bank.get(1, Table::HoldingRegisters, u16::MAX), 1);
        assert_eq!(bank.get(1, Table::HoldingRegisters, 0), 0);
    }
}
