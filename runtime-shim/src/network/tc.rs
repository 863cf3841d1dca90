//! The traffic-control messages of the "tc filter" model: an ingress qdisc
//! on each end, and on each a u32 filter that matches every frame and
//! redirects it (mirred, egress) to the other end.

use netlink_packet_route::tc::{
    TcAction, TcActionAttribute, TcActionMirrorOption, TcActionOption, TcActionType, TcAttribute,
    TcFilterU32Option, TcHandle, TcMessage, TcMirror, TcMirrorActionType, TcOption, TcU32Key,
    TcU32Selector, TcU32SelectorFlags,
};
use netlink_packet_route::RouteNetlinkMessage;

/// The ingress qdisc's handle, `ffff:`; its filters hang below it.
const INGRESS_HANDLE: TcHandle = TcHandle {
    major: 0xffff,
    minor: 0,
};

/// Priority of the redirect filter.
const FILTER_PRIO: u32 = 1;

fn ingress_qdisc(index: u32) -> TcMessage {
    let mut m = TcMessage::with_index(link_index(index));
    m.header.handle = INGRESS_HANDLE;
    m.header.parent = TcHandle::INGRESS;
    m.attributes.push(TcAttribute::Kind("ingress".into()));
    m
}

/// `tc qdisc add dev INDEX ingress` (with NLM_F_CREATE | NLM_F_EXCL, so an
/// ingress or clsact qdisc already there is an error).
pub(super) fn add_ingress(index: u32) -> RouteNetlinkMessage {
    RouteNetlinkMessage::NewQueueDiscipline(ingress_qdisc(index))
}

/// `tc qdisc del dev INDEX ingress`: its filters go with it.
pub(super) fn del_ingress(index: u32) -> RouteNetlinkMessage {
    RouteNetlinkMessage::DelQueueDiscipline(ingress_qdisc(index))
}

/// `tc filter add dev FROM parent ffff: protocol all prio 1 u32 match u32 0 0
/// action mirred egress redirect dev TO`.
pub(super) fn redirect(from: u32, to: u32) -> RouteNetlinkMessage {
    let mut m = TcMessage::with_index(link_index(from));
    m.header.parent = INGRESS_HANDLE;
    // info = priority << 16 | protocol, the protocol in network byte order.
    let all = u32::from((libc::ETH_P_ALL as u16).to_be());
    m.header.info = (FILTER_PRIO << 16) | all;

    // One key with an empty mask matches every frame.
    let mut selector = TcU32Selector::default();
    selector.flags = TcU32SelectorFlags::Terminal;
    selector.nkeys = 1;
    selector.keys = vec![TcU32Key::default()];

    let mut mirred = TcMirror::default();
    mirred.generic.action = TcActionType::Stolen;
    mirred.eaction = TcMirrorActionType::EgressRedir;
    mirred.ifindex = to;
    let mut action = TcAction::default();
    action.attributes = vec![
        TcActionAttribute::Kind("mirred".into()),
        TcActionAttribute::Options(vec![TcActionOption::Mirror(TcActionMirrorOption::Parms(
            mirred,
        ))]),
    ];

    m.attributes.push(TcAttribute::Kind("u32".into()));
    m.attributes.push(TcAttribute::Options(vec![
        TcOption::U32(TcFilterU32Option::Selector(selector)),
        TcOption::U32(TcFilterU32Option::Action(vec![action])),
    ]));
    RouteNetlinkMessage::NewTrafficFilter(m)
}

/// Interface indexes are positive ints in the kernel; one read from a dump
/// always fits.
fn link_index(index: u32) -> i32 {
    i32::try_from(index).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::Emitable;

    #[test]
    fn the_redirect_filter_is_what_tc_would_send() {
        let RouteNetlinkMessage::NewTrafficFilter(m) = redirect(5, 9) else {
            panic!("not a filter")
        };
        assert_eq!(m.header.index, 5);
        assert_eq!(u32::from(m.header.parent), 0xffff_0000);
        // prio 1, protocol ETH_P_ALL (0x0003) in network order.
        assert_eq!(m.header.info, 0x0001_0300);
        let mut bytes = vec![0u8; m.buffer_len()];
        m.emit(&mut bytes);
        // The end of struct tc_mirred: tc_gen's action STOLEN (4), refcnt
        // and bindcnt (0), then eaction EGRESS_REDIR (1) and ifindex 9.
        let parms: Vec<u8> = [4i32, 0, 0, 1, 9]
            .iter()
            .flat_map(|v| v.to_ne_bytes())
            .collect();
        assert!(
            bytes.windows(parms.len()).any(|w| w == parms.as_slice()),
            "no mirred egress redirect to 9 in {bytes:?}"
        );
    }

    #[test]
    fn the_ingress_qdisc_is_ffff_under_ingress() {
        let RouteNetlinkMessage::NewQueueDiscipline(m) = add_ingress(3) else {
            panic!("not a qdisc")
        };
        assert_eq!(u32::from(m.header.handle), 0xffff_0000);
        assert_eq!(u32::from(m.header.parent), 0xffff_fff1);
        assert_eq!(m.attributes, vec![TcAttribute::Kind("ingress".into())]);
    }
}
