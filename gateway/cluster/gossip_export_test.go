package cluster

// TuneForTests shortens memberlist's intervals for loopback tests of other
// test packages (cluster_test).
func TuneForTests(c *GossipConfig) { c.tune = testTune }
