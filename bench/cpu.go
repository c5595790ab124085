package bench

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Error codes that are not AWS exception names.
const (
	CodeWrongResult = "WrongResult" // a checked result did not hold
	CodeTimeout     = "Timeout"     // the call's context ended first
	CodeTransport   = "Transport"   // the connection failed
)

// CPUProbe reads the CPU time this process and, when it runs on this
// machine, the server process have used. A nil probe reads this process
// only.
type CPUProbe struct {
	// ServerPID is the server's process id; 0 means not seen.
	ServerPID int
}

type cpuReading struct {
	client, server time.Duration
	serverSeen     bool
}

func (p *CPUProbe) read() (cpuReading, error) {
	var r cpuReading
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return r, fmt.Errorf("bench: getrusage: %w", err)
	}
	r.client = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	if p != nil && p.ServerPID > 0 {
		if d, err := ProcessCPU(p.ServerPID); err == nil {
			r.server, r.serverSeen = d, true
		}
	}
	return r, nil
}

// ProcessCPU returns the user and system CPU time a process has used, from
// /proc/<pid>/stat.
func ProcessCPU(pid int) (time.Duration, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name may hold spaces and parentheses: fields resume after
	// the last ") ".
	i := bytes.LastIndexByte(raw, ')')
	if i < 0 || i+2 > len(raw) {
		return 0, fmt.Errorf("bench: /proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(string(raw[i+2:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("bench: /proc/%d/stat: too few fields", pid)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("bench: /proc/%d/stat: bad CPU times", pid)
	}
	const userHZ = 100 // clock ticks per second on Linux
	return time.Duration(utime+stime) * time.Second / userHZ, nil
}

// ServerPID finds the process on this machine listening on the endpoint's
// TCP port (a loopback or local address), through /proc/net/tcp{,6} and the
// processes' open sockets. It returns 0 when the endpoint is not local or
// the process can't be seen (another user's, without privilege).
func ServerPID(endpoint string) int {
	u, err := url.Parse(endpoint)
	if err != nil {
		return 0
	}
	host, portStr, err := net.SplitHostPort(u.Host)
	if err != nil {
		host, portStr = u.Hostname(), "443"
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !isLocal(ip)) {
		return 0
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return 0
	}
	inodes := map[string]bool{}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		listeningInodes(f, port, inodes)
	}
	if len(inodes) == 0 {
		return 0
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/fd/*")
	for _, fd := range procs {
		link, err := os.Readlink(fd)
		if err != nil || !strings.HasPrefix(link, "socket:[") {
			continue
		}
		if inodes[strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]")] {
			pid, _ := strconv.Atoi(strings.Split(fd, "/")[2])
			if pid != os.Getpid() {
				return pid
			}
		}
	}
	return 0
}

func isLocal(ip net.IP) bool {
	if ip.IsLoopback() || ip.IsUnspecified() {
		return true
	}
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.Equal(ip) {
			return true
		}
	}
	return false
}

// listeningInodes adds the socket inodes of listening sockets on port found
// in a /proc/net/tcp-format file.
func listeningInodes(path string, port int, into map[string]bool) {
	f, err := os.Open(path)
	if err != nil {
		return
	}
	defer f.Close()
	want := fmt.Sprintf(":%04X", port)
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		// sl local_address rem_address st … inode (field 9)
		if len(fields) < 10 || fields[3] != "0A" { // 0A: TCP_LISTEN
			continue
		}
		if strings.HasSuffix(fields[1], want) {
			into[fields[9]] = true
		}
	}
}
