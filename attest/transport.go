package attest

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/google/go-tpm/tpm2/transport"
)

// maxResponse bounds a TPM response frame (TPM2's MAX_RESPONSE_SIZE is 4096
// on most TPMs; swtpm allows more).
const maxResponse = 64 << 10

// streamTPM sends raw TPM 2.0 command frames over a unix stream socket, one
// connection per command, and reads exactly one response frame (its size is
// in the 10-byte response header). This is what swtpm's --server type=unixio
// data channel speaks. Connecting per command, as go-tpm's linuxudstpm does,
// means a restarted swtpm is picked up without reopening; reading the frame
// by its header size (instead of a single read) keeps large responses whole.
type streamTPM struct {
	path    string
	timeout time.Duration
}

var _ transport.TPMCloser = (*streamTPM)(nil)

func (s *streamTPM) Send(cmd []byte) ([]byte, error) {
	conn, err := net.DialTimeout("unix", s.path, s.timeout)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(s.timeout)); err != nil {
		return nil, err
	}
	if _, err := conn.Write(cmd); err != nil {
		return nil, err
	}
	hdr := make([]byte, 10)
	if _, err := io.ReadFull(conn, hdr); err != nil {
		return nil, fmt.Errorf("reading TPM response header: %w", err)
	}
	size := binary.BigEndian.Uint32(hdr[2:6])
	if size < 10 || size > maxResponse {
		return nil, fmt.Errorf("TPM response size %d out of range", size)
	}
	rsp := make([]byte, size)
	copy(rsp, hdr)
	if _, err := io.ReadFull(conn, rsp[10:]); err != nil {
		return nil, fmt.Errorf("reading TPM response: %w", err)
	}
	return rsp, nil
}

func (s *streamTPM) Close() error { return nil }
