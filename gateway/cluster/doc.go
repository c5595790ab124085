// Package cluster makes hsmgate gateways in several zones one service:
// membership and health by gossip, and a replicated keystore by raft
// (docs/cluster.md).
//
// # Membership, health and failover
//
// [Gossip] is the node's membership in its region's memberlist pool: each
// node publishes its [NodeMeta] (zone, API address, slot health, load,
// attestation) and keeps a view of the others. [Failover] forwards crypto
// requests to a healthy peer while the local HSM pool has no healthy slot.
// Gossip is a hint, never authority.
//
// # Replicated keystore
//
// [RaftNode] replicates the keystore (package gateway/keystore, a state
// machine of encoded commands) through hashicorp/raft with raft-boltdb:
// writes go to the leader (forwarded from followers over mutual TLS),
// reads are local. A node cut off from the majority keeps serving reads
// and refuses writes with a [*NoQuorumError]. [RaftClient] drives
// membership changes, backups and restores from outside a node, and
// [RaftFaults] partitions a node's transport in tests.
package cluster
