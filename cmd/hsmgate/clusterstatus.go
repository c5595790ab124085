package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/hsmgate/hsmgate/gateway/cluster"
)

// `hsmgate cluster status`: the running gateway's view of its cluster,
// read from its GET /cluster over mutual TLS as the admin (the admin's
// client certificate and the CA of the data folder, as the principal
// commands use while the gateway runs).

// clusterStatusPath is where a gateway serves its cluster view.
const clusterStatusPath = "/cluster"

// clusterStatusCommand is `hsmgate cluster status`; it belongs under the
// `cluster` command.
func clusterStatusCommand() *cli.Command {
	return &cli.Command{
		Name:  "status",
		Usage: "show every node of the cluster as the running gateway sees it: zone, state, HSM slots, load, attestation",
		Flags: []cli.Flag{
			gatewayListenFlag(),
			&cli.BoolFlag{Name: "json", Usage: "print the gateway's JSON document instead of a table"},
		},
		Action: func(c *cli.Context) error {
			if err := noArgs(c); err != nil {
				return err
			}
			return runClusterStatus(newPrincipalCmd(c, "cluster status"), c.Bool("json"))
		},
	}
}

func runClusterStatus(pc *principalCmd, asJSON bool) error {
	cfg, err := loadConfig(pc.dataDir, pc.name)
	if err != nil {
		return err
	}
	opts, err := cfg.GatewayOptions()
	if err != nil {
		return fmt.Errorf("%s: %w", pc.name, err)
	}
	endpoint, client, err := pc.adminHTTPClient(opts, "The cluster status is read from the running gateway.")
	if err != nil {
		return err
	}
	defer client.CloseIdleConnections()
	st, raw, err := fetchClusterStatus(pc.ctx, client, endpoint)
	if err != nil {
		return fmt.Errorf("%s: %w", pc.name, err)
	}
	if asJSON {
		_, err := pc.stdout.Write(raw)
		return err
	}
	return printClusterStatus(pc.stdout, st)
}

// fetchClusterStatus reads GET /cluster from the gateway at endpoint.
func fetchClusterStatus(ctx context.Context, client *http.Client, endpoint string) (cluster.GossipStatus, []byte, error) {
	var st cluster.GossipStatus
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(endpoint, "/")+clusterStatusPath, nil)
	if err != nil {
		return st, nil, err
	}
	req.Header.Set("User-Agent", "hsmgate-cli")
	resp, err := client.Do(req)
	if err != nil {
		return st, nil, fmt.Errorf("the gateway at %s could not be reached: %w. If it listens elsewhere than gateway.listen, pass its address with --listen", endpoint, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return st, nil, fmt.Errorf("read the gateway's answer: %w", err)
	}
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return st, nil, fmt.Errorf("the gateway at %s is not in a cluster (it serves no %s; see docs/cluster.md)", endpoint, clusterStatusPath)
	case resp.StatusCode != http.StatusOK:
		return st, nil, fmt.Errorf("the gateway at %s answered %s: %s", endpoint, resp.Status, strings.TrimSpace(string(raw[:min(len(raw), 512)])))
	}
	if err := json.Unmarshal(raw, &st); err != nil {
		return st, nil, fmt.Errorf("the gateway's answer is not a cluster status: %w", err)
	}
	return st, raw, nil
}

// printClusterStatus prints the view as a table, one node a line, and
// under it what keeps a node from taking forwarded requests.
func printClusterStatus(w io.Writer, st cluster.GossipStatus) error {
	fmt.Fprintf(w, "Cluster as %s (zone %s) sees it at %s", st.Self, st.Zone, st.Time.Format(time.RFC3339))
	if st.RequireAttestation {
		fmt.Fprint(w, "; forwarding requires a verified attestation")
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tZONE\tSTATE\tSLOTS\tLOAD\tATTESTATION\tIMAGE\tLAST UPDATE")
	var notes []string
	for _, n := range st.Nodes {
		node := n.ID
		if n.Self {
			node += " (this node)"
		}
		slots, load, image := "-", "-", "-"
		if m := n.Metadata; m != nil {
			slots = fmt.Sprintf("%d/%d", m.Slots.Healthy, m.Slots.Total())
			if m.Slots.Degraded > 0 {
				slots += fmt.Sprintf(" (%d degraded)", m.Slots.Degraded)
			}
			load = fmt.Sprintf("%d in flight, %d/s", m.InFlight, m.RPS)
			if m.MaxInFlight > 0 {
				load = fmt.Sprintf("%d/%d in flight, %d/s", m.InFlight, m.MaxInFlight, m.RPS)
			}
			image = dash(m.ImageVersion)
		}
		att := n.Attestation
		if strings.HasPrefix(att, "unverified") {
			notes = append(notes, fmt.Sprintf("%s: attestation %s", n.ID, att))
			att = "unverified"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", node, dash(n.Zone), n.State, slots, load, dash(att), image, ago(st.Time, n.LastUpdate))
		switch {
		case n.MetadataError != "":
			notes = append(notes, fmt.Sprintf("%s: %s", n.ID, n.MetadataError))
		case !n.Self && !n.Forwardable:
			notes = append(notes, fmt.Sprintf("%s: takes no forwarded requests: %s", n.ID, n.NotForwardable))
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, s := range notes {
		fmt.Fprintln(w, s)
	}
	return nil
}

// ago is how long before now t was, to the second.
func ago(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return now.Sub(t).Round(time.Second).String() + " ago"
}
