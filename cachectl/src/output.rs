//! Printing helpers: aligned tables (comfy-table), times (humantime), sizes (bytesize), and
//! MessagePack values as JSON.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A text table: a header row, then rows, columns padded to their widest cell and two spaces
/// apart, no borders (comfy-table underneath).
#[derive(Debug)]
pub(crate) struct Table(comfy_table::Table);

impl Table {
    pub(crate) fn new(header: &[&str]) -> Self {
        let mut t = comfy_table::Table::new();
        t.load_style(comfy_table::presets::NOTHING)
            .set_header(header.to_vec());
        Self(t)
    }

    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.0.add_row(cells);
    }

    /// Right-aligns the columns `cols` (figures), header included.
    pub(crate) fn right(&mut self, cols: &[usize]) -> &mut Self {
        for &c in cols {
            if let Some(col) = self.0.column_mut(c) {
                col.set_cell_alignment(comfy_table::CellAlignment::Right);
            }
        }
        self
    }

    pub(crate) fn render(&mut self) -> String {
        let last = self.0.column_count().saturating_sub(1);
        for (i, col) in self.0.column_iter_mut().enumerate() {
            col.set_padding((0, if i == last { 0 } else { 2 }));
        }
        let mut out = String::new();
        for line in self.0.lines() {
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Unix milliseconds as `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC).
pub(crate) fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// A duration as humantime writes it (`1h 2m`, `3m 4s`, `5s 200ms`, `12ms`, `80us`), rounded to
/// what a person reads: whole seconds from a minute on, tenths of a second from a second on,
/// milliseconds from a millisecond on.
pub(crate) fn human_duration(d: Duration) -> String {
    let unit = if d >= Duration::from_secs(60) {
        Duration::from_secs(1)
    } else if d >= Duration::from_secs(1) {
        Duration::from_millis(100)
    } else if d >= Duration::from_millis(1) {
        Duration::from_millis(1)
    } else {
        Duration::from_micros(1)
    };
    let units = (d.as_nanos() + unit.as_nanos() / 2) / unit.as_nanos();
    let rounded = unit.saturating_mul(u32::try_from(units).unwrap_or(u32::MAX));
    humantime::format_duration(rounded).to_string()
}

/// `at` relative to `now`: `in 4m2s` or `3.0s ago`.
pub(crate) fn relative(at_ms: u64, now_ms: u64) -> String {
    if at_ms >= now_ms {
        format!(
            "in {}",
            human_duration(Duration::from_millis(at_ms - now_ms))
        )
    } else {
        format!(
            "{} ago",
            human_duration(Duration::from_millis(now_ms - at_ms))
        )
    }
}

/// Bytes as `512 B`, `1.5 KiB`, `3.2 MiB`, `1.1 GiB`.
pub(crate) fn bytes(n: u64) -> String {
    bytesize::ByteSize::b(n).display().iec().to_string()
}

/// A ratio as a percentage, `-` when there was nothing to divide.
pub(crate) fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        "-".to_owned()
    } else {
        format!("{:.1}%", part as f64 * 100.0 / whole as f64)
    }
}

/// A MessagePack value as JSON. Map keys that are not strings are written as their JSON text;
/// binary becomes an array of bytes; an extension becomes `{"$ext": type, "data": [bytes]}`;
/// non-finite floats become `null`.
pub(crate) fn msgpack_to_json(v: &rmpv::Value) -> serde_json::Value {
    use rmpv::Value as M;
    use serde_json::Value as J;
    match v {
        M::Nil => J::Null,
        M::Boolean(b) => J::Bool(*b),
        M::Integer(i) => i
            .as_u64()
            .map(J::from)
            .or_else(|| i.as_i64().map(J::from))
            .unwrap_or(J::Null),
        M::F32(f) => serde_json::Number::from_f64(f64::from(*f)).map_or(J::Null, J::Number),
        M::F64(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
        M::String(s) => J::String(match s.as_str() {
            Some(s) => s.to_owned(),
            None => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        }),
        M::Binary(b) => J::Array(b.iter().map(|x| J::from(*x)).collect()),
        M::Array(a) => J::Array(a.iter().map(msgpack_to_json).collect()),
        M::Map(m) => J::Object(
            m.iter()
                .map(|(k, v)| {
                    let key = match k {
                        M::String(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
                        other => msgpack_to_json(other).to_string(),
                    };
                    (key, msgpack_to_json(v))
                })
                .collect(),
        ),
        M::Ext(ty, data) => serde_json::json!({ "$ext": ty, "data": data }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(utc(1_700_000_000_000), "2023-11-14T22:13:20.000Z");
    }

    #[test]
    fn sizes_durations_and_percentages_read_naturally() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 << 20), "3.0 MiB");
        assert_eq!(human_duration(Duration::from_millis(12)), "12ms");
        assert_eq!(human_duration(Duration::from_micros(12_345)), "12ms");
        assert_eq!(human_duration(Duration::from_micros(80)), "80us");
        assert_eq!(human_duration(Duration::from_millis(3_249)), "3s 200ms");
        assert_eq!(human_duration(Duration::from_millis(125_600)), "2m 6s");
        assert_eq!(relative(1_000, 4_000), "3s ago");
        assert_eq!(relative(4_000, 1_000), "in 3s");
        assert_eq!(percent(1, 4), "25.0%");
        assert_eq!(percent(0, 0), "-");
    }

    #[test]
    fn msgpack_maps_with_any_keys_and_binary_become_json() {
        let v = rmpv::Value::Map(vec![
            (rmpv::Value::from("name"), rmpv::Value::from("ada")),
            (rmpv::Value::from(7), rmpv::Value::Binary(vec![1, 2])),
            (rmpv::Value::from("f"), rmpv::Value::F64(f64::NAN)),
        ]);
        assert_eq!(
            msgpack_to_json(&v),
            serde_json::json!({"name": "ada", "7": [1, 2], "f": null})
        );
    }

    #[test]
    fn tables_pad_columns() {
        let mut t = Table::new(&["a", "bbb"]);
        t.row(vec!["xxxx".into(), "y".into()]);
        assert_eq!(t.render(), "a     bbb\nxxxx  y\n");
        let mut t = Table::new(&["name", "n"]);
        t.row(vec!["x".into(), "1234".into()]);
        t.right(&[1]);
        assert_eq!(t.render(), "name     n\nx     1234\n");
    }
}
