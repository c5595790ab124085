package attest

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// Swtpm is a running swtpm process serving a TPM 2.0 on a unix socket.
//
// It is the software TPM of tests and of the embedded default (a gateway
// configured without a TPM device). The TPM's permanent state — its seeds,
// hence the EK, the AK and the storage root key, and so every sealed blob —
// lives in StateDir and survives Stop/Start. Its volatile state does not:
// every Start is a TPM Reset (swtpm runs TPM2_Startup(CLEAR), see
// --flags not-need-init,startup-clear), which sets the PCRs back to zero just
// like a reboot of a machine with a hardware TPM.
//
// swtpm's data channel speaks raw TPM 2.0 command/response frames (no
// Microsoft-simulator framing), so Open talks to it with a plain stream
// transport; nothing here uses the control channel except swtpm itself.
type Swtpm struct {
	// Binary is the swtpm executable.
	Binary string
	// StateDir holds the TPM's persistent state (--tpmstate dir=).
	StateDir string
	// Socket is the data channel: give it to Config.Socket.
	Socket string
	// CtrlSocket is swtpm's control channel.
	CtrlSocket string
	// LogFile receives swtpm's own log.
	LogFile string

	mu      sync.Mutex // serialises Start and Stop
	cmd     *exec.Cmd
	done    chan struct{} // closed when cmd has been waited for
	waitErr error         // cmd.Wait's result, valid once done is closed
}

// ErrNoSwtpm reports that the swtpm binary could not be found.
var ErrNoSwtpm = errors.New("attest: swtpm not found (install the Debian packages swtpm swtpm-tools)")

// NewSwtpm prepares (but does not start) an swtpm whose persistent state is in
// stateDir and whose sockets are created in socketDir. socketDir should have a
// short path: a unix socket path is limited to 107 bytes. binary may be ""
// to look swtpm up in PATH.
func NewSwtpm(binary, stateDir, socketDir string) (*Swtpm, error) {
	if binary == "" {
		p, err := exec.LookPath("swtpm")
		if err != nil {
			return nil, ErrNoSwtpm
		}
		binary = p
	}
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(socketDir, 0o700); err != nil {
		return nil, err
	}
	s := &Swtpm{
		Binary:     binary,
		StateDir:   stateDir,
		Socket:     filepath.Join(socketDir, "tpm.sock"),
		CtrlSocket: filepath.Join(socketDir, "ctrl.sock"),
		LogFile:    filepath.Join(socketDir, "swtpm.log"),
	}
	if len(s.CtrlSocket) > 107 {
		return nil, fmt.Errorf("attest: socket path %q is too long for a unix socket", s.CtrlSocket)
	}
	return s, nil
}

// Start launches swtpm and waits (up to timeout) until its data socket
// accepts connections.
func (s *Swtpm) Start(timeout time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return errors.New("attest: swtpm already running")
	}
	// A socket file left by a killed swtpm would make bind fail.
	_ = os.Remove(s.Socket)
	_ = os.Remove(s.CtrlSocket)
	cmd := exec.Command(s.Binary, "socket", "--tpm2",
		"--server", "type=unixio,path="+s.Socket,
		"--ctrl", "type=unixio,path="+s.CtrlSocket,
		"--tpmstate", "dir="+s.StateDir,
		"--flags", "not-need-init,startup-clear",
		"--log", "file="+s.LogFile+",level=1",
	)
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("attest: starting swtpm: %w", err)
	}
	done := make(chan struct{})
	s.cmd, s.done = cmd, done
	go func() {
		s.waitErr = cmd.Wait() // read only after done is closed
		close(done)
	}()
	deadline := time.Now().Add(timeout)
	for {
		select {
		case <-done:
			s.cmd = nil
			log, _ := os.ReadFile(s.LogFile)
			return fmt.Errorf("attest: swtpm exited during start-up (%v): %s", s.waitErr, log)
		default:
		}
		if c, err := net.DialTimeout("unix", s.Socket, time.Second); err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			s.stopLocked()
			return fmt.Errorf("attest: swtpm did not open %s within %v", s.Socket, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Stop terminates swtpm (SIGTERM, then SIGKILL after 5s) and waits for it.
// Its volatile state, the PCRs included, is lost, as at a power cycle.
func (s *Swtpm) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopLocked()
}

func (s *Swtpm) stopLocked() error {
	if s.cmd == nil {
		return nil
	}
	cmd, done := s.cmd, s.done
	s.cmd = nil
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
	return nil
}

// Restart stops and starts swtpm with the same state directory: a TPM Reset.
func (s *Swtpm) Restart(timeout time.Duration) error {
	if err := s.Stop(); err != nil {
		return err
	}
	return s.Start(timeout)
}
