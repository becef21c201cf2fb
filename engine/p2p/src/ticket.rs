//! A device's address as text: `adiuva-peer-1-ID@ADDR,ADDR`, ID the device's public key (hex,
//! which is also its iroh endpoint id), each ADDR a socket address it listens on. The ticket
//! holds no secret: a device that is not in the workspace's list is refused whatever it holds.

use std::net::SocketAddr;

use adiuva_model::DeviceId;

use crate::error::PeerError;

const PREFIX: &str = "adiuva-peer-1-";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerTicket {
    pub device: DeviceId,
    pub addrs: Vec<SocketAddr>,
}

impl std::fmt::Display for PeerTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let addrs: Vec<String> = self.addrs.iter().map(SocketAddr::to_string).collect();
        write!(f, "{PREFIX}{}@{}", self.device, addrs.join(","))
    }
}

impl std::str::FromStr for PeerTicket {
    type Err = PeerError;

    fn from_str(text: &str) -> Result<Self, PeerError> {
        let invalid = |detail: &str| PeerError::TicketInvalid { detail: detail.to_owned() };
        let rest = text.trim().strip_prefix(PREFIX).ok_or_else(|| invalid("it does not start with adiuva-peer-1-"))?;
        let (device, addrs) =
            rest.split_once('@').ok_or_else(|| invalid("no @ between the device and its addresses"))?;
        let device = device.parse().map_err(|_| invalid("the device id is not 64 hex digits"))?;
        let addrs = addrs
            .split(',')
            .filter(|addr| !addr.is_empty())
            .map(|addr| addr.parse().map_err(|_| invalid("an address is not IP:PORT")))
            .collect::<Result<Vec<SocketAddr>, _>>()?;
        if addrs.is_empty() {
            return Err(invalid("it names no address"));
        }
        Ok(PeerTicket { device, addrs })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_round_trip_and_refuse_garbage() {
        let ticket = PeerTicket {
            device: DeviceId([9; 32]),
            addrs: vec!["127.0.0.1:4242".parse().unwrap(), "[::1]:7".parse().unwrap()],
        };
        assert_eq!(ticket.to_string().parse::<PeerTicket>().unwrap(), ticket);
        for bad in ["", "adiuva-peer-1-", "adiuva-peer-1-zz@127.0.0.1:1", &format!("adiuva-peer-1-{}@", ticket.device)]
        {
            assert!(bad.parse::<PeerTicket>().is_err(), "{bad}");
        }
    }
}
