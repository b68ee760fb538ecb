//! One attempt as the JSON and NDJSON reports write it: the record, with its
//! addresses also split into address and port (log shippers need not parse
//! `"[2001:db8::1]:5432"`) and the Community ID that joins it with Zeek's and
//! Suricata's logs of the same connection.

use std::net::IpAddr;

use serde::Serialize;

use crate::record::AttemptRecord;

#[derive(Serialize)]
pub struct AttemptJson<'a> {
    #[serde(flatten)]
    record: &'a AttemptRecord,
    client_ip: IpAddr,
    client_port: u16,
    server_ip: IpAddr,
    server_port: u16,
    community_id: String,
    /// Only on NDJSON lines, which have no document around them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pgreach_version: Option<&'static str>,
}

impl<'a> AttemptJson<'a> {
    pub fn new(record: &'a AttemptRecord) -> AttemptJson<'a> {
        AttemptJson {
            record,
            client_ip: record.client.ip(),
            client_port: record.client.port(),
            server_ip: record.server.ip(),
            server_port: record.server.port(),
            community_id: record.community_id(),
            pgreach_version: None,
        }
    }

    /// With the producer's version, for a line that stands alone.
    pub fn standalone(record: &'a AttemptRecord) -> AttemptJson<'a> {
        AttemptJson { pgreach_version: Some(super::PGREACH_VERSION), ..AttemptJson::new(record) }
    }
}
