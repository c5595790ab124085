package kmsapi

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/hsmgate/hsmgate/gateway/keystore"
)

// A keystore write refused for want of a raft majority reaches the client
// as a retryable 503 that says why; a command's own refusal does not.
func TestUnavailableKeystoreIsRetryable(t *testing.T) {
	err := fmt.Errorf("create key: %w", fmt.Errorf("%w: control-plane writes need a raft majority; this node can reach 1 of 3 voters", keystore.ErrUnavailable))
	e := toAPI(err)
	if e.Type != ExDependencyTimeout || e.Status != http.StatusServiceUnavailable || !strings.Contains(e.Message, "1 of 3 voters") {
		t.Fatalf("got %+v", e)
	}
	if e := toAPI(fmt.Errorf("key k: %w", keystore.ErrNotFound)); e.Type != ExNotFound {
		t.Fatalf("a refusal: %+v", e)
	}
	if e := toAPI(errors.New("something else")); e.Type != ExInternal {
		t.Fatalf("another error: %+v", e)
	}
}
