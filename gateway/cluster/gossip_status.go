package cluster

import (
	"encoding/json"
	"net/http"
	"time"
)

// GossipStatus is the /cluster document: every node as this node sees it.
type GossipStatus struct {
	// Self is this node's id, Zone its zone.
	Self string `json:"self"`
	Zone string `json:"zone"`
	// RequireAttestation: only peers with a verified attestation take
	// forwarded requests.
	RequireAttestation bool `json:"requireAttestation"`
	// Time is when the view was taken.
	Time  time.Time          `json:"time"`
	Nodes []GossipNodeStatus `json:"nodes"`
}

// GossipNodeStatus is one node of the /cluster document.
type GossipNodeStatus struct {
	ID            string      `json:"id"`
	Self          bool        `json:"self,omitempty"`
	Zone          string      `json:"zone,omitempty"`
	State         MemberState `json:"state"`
	GossipAddress string      `json:"gossipAddress"`
	// Metadata is what the node published; absent when it was refused
	// (MetadataError says why).
	Metadata      *NodeMeta `json:"metadata,omitempty"`
	MetadataError string    `json:"metadataError,omitempty"`
	// Attestation is the node's attestation as this node knows it: "off",
	// "measured" (the node's own claim), "verified" (this node verified its
	// quote), "failed" (its claim), "unverified: <why>" (this node could not
	// verify it), or "" when its metadata is invalid.
	Attestation string `json:"attestation,omitempty"`
	// Forwardable is whether this node would forward requests to it now,
	// and NotForwardable why not.
	Forwardable    bool   `json:"forwardable"`
	NotForwardable string `json:"notForwardable,omitempty"`
	// LastUpdate is when this node last learnt something of it;
	// LastContact when it last answered a probe, RTTMillis how long that
	// took.
	LastUpdate  time.Time  `json:"lastUpdate"`
	LastContact *time.Time `json:"lastContact,omitempty"`
	RTTMillis   float64    `json:"rttMillis,omitempty"`
}

// Status returns the /cluster document.
func (g *Gossip) Status() GossipStatus {
	st := GossipStatus{Self: g.cfg.NodeID, Zone: g.cfg.Zone, RequireAttestation: g.cfg.RequireAttestation, Time: g.now().UTC()}
	for _, n := range g.Members() {
		ns := GossipNodeStatus{
			ID: n.ID, Self: n.Self, Zone: n.Zone(), State: n.State, GossipAddress: n.GossipAddress,
			Metadata: n.Meta, MetadataError: n.MetaError, LastUpdate: n.Updated.UTC(),
		}
		if n.Meta != nil {
			ns.Attestation = n.Meta.Attestation.String()
			if v := g.cfg.Verifier; v != nil && !n.Self && n.Meta.Attestation == AttestationMeasured {
				if d, ok := v.Verdict(n.ID); ok && !d.Expired {
					if d.Err != nil {
						ns.Attestation = "unverified: " + d.Err.Error()
					} else {
						ns.Attestation = "verified"
					}
				}
			}
		}
		why := g.ineligible(n)
		if n.Self {
			why = "this node"
		}
		ns.Forwardable, ns.NotForwardable = why == "", why
		if !n.LastContact.IsZero() {
			t := n.LastContact.UTC()
			ns.LastContact = &t
			ns.RTTMillis = float64(n.RTT.Microseconds()) / 1000
		}
		st.Nodes = append(st.Nodes, ns)
	}
	return st
}

// StatusHandler serves GET /cluster: the GossipStatus document as JSON.
// It does no authentication: mount it behind the gateway's (the document
// names every node's addresses and health).
func StatusHandler(g *Gossip) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		b, err := json.MarshalIndent(g.Status(), "", "  ")
		if err != nil {
			http.Error(w, "the cluster status could not be encoded", http.StatusInternalServerError)
			return
		}
		h := w.Header()
		h.Set("Content-Type", "application/json")
		h.Set("Cache-Control", "no-store")
		w.Write(append(b, '\n'))
	})
}
