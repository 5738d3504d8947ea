# Two "hosts" on one machine: network namespaces joined by a veth pair,
# with addresses in a /30 that exists only inside them.  Files, mounts and
# processes stay shared; only the network is separate, so a client run
# with netns_run in the other namespace reaches the server through the
# veth link alone.
#   netns_up TAG      make namespaces fssnap-TAG-vol and fssnap-TAG-bak;
#                     sets NETNS_VOL, NETNS_BAK, VOL_ADDR, BAK_ADDR
#   netns_down        remove both (and with them the veth pair)
#   netns_run NS CMD...  run CMD in namespace NS (network only: nsenter,
#                     not ip netns exec, which would also give CMD a mount
#                     namespace of its own and hide FUSE mounts)

netns_up() {
  local tag=$1 net=$((RANDOM % 250 + 1))
  NETNS_VOL=fssnap-$tag-vol NETNS_BAK=fssnap-$tag-bak
  VOL_ADDR=10.250.$net.1 BAK_ADDR=10.250.$net.2
  ip netns add "$NETNS_VOL" || return 1
  ip netns add "$NETNS_BAK" || return 1
  ip link add "fsv$tag" netns "$NETNS_VOL" type veth peer name "fsb$tag" netns "$NETNS_BAK" \
    || return 1
  ip -n "$NETNS_VOL" addr add "$VOL_ADDR/30" dev "fsv$tag"
  ip -n "$NETNS_BAK" addr add "$BAK_ADDR/30" dev "fsb$tag"
  ip -n "$NETNS_VOL" link set lo up
  ip -n "$NETNS_BAK" link set lo up
  ip -n "$NETNS_VOL" link set "fsv$tag" up
  ip -n "$NETNS_BAK" link set "fsb$tag" up
}

netns_down() {
  [ -n "${NETNS_VOL:-}" ] && ip netns del "$NETNS_VOL" 2>/dev/null
  [ -n "${NETNS_BAK:-}" ] && ip netns del "$NETNS_BAK" 2>/dev/null
  return 0
}

netns_run() {
  local ns=$1
  shift
  nsenter --net="/run/netns/$ns" "$@"
}
