package detcbor

import (
	"errors"
	"strings"
	"testing"
)

var errNC = errors.New("test: not canonical")

type rec struct {
	_    struct{} `cbor:",toarray"`
	Tag  string
	N    uint64
	Data []byte
}

func TestStrictRoundTrip(t *testing.T) {
	c := New(Options{Name: "test", ErrNonCanonical: errNC, MaxSize: 64, MaxNested: 4, MaxMapPairs: 16})
	b, err := c.Marshal(rec{Tag: "t", N: 1, Data: []byte{1}})
	if err != nil {
		t.Fatal(err)
	}
	var r rec
	if err := c.Unmarshal(b, &r); err != nil || r.N != 1 {
		t.Fatalf("round trip: %+v %v", r, err)
	}
	for name, data := range map[string][]byte{
		"trailing byte":      append(append([]byte{}, b...), 0),
		"non-minimal int":    {0x83, 0x61, 't', 0x18, 0x01, 0x41, 0x01},
		"indefinite array":   {0x9f, 0x61, 't', 0x01, 0x41, 0x01, 0xff},
		"tagged":             {0xc1, 0x83, 0x61, 't', 0x01, 0x41, 0x01},
		"too large":          make([]byte, 65),
		"missing a field":    {0x82, 0x61, 't', 0x01},
		"a field of another": {0x83, 0x61, 't', 0x61, 'x', 0x41, 0x01},
	} {
		var r rec
		if err := c.Unmarshal(data, &r); !errors.Is(err, errNC) {
			t.Errorf("%s: %v, want the non-canonical error", name, err)
		}
	}
}

func TestArmorAndText(t *testing.T) {
	c := New(Options{Name: "test", ErrNonCanonical: errNC, MaxSize: 64, MaxNested: 4, MaxMapPairs: 16})
	a := Armor("THING", []byte("data"))
	if got, err := c.DearmorType(a, "THING"); err != nil || string(got) != "data" {
		t.Fatalf("DearmorType: %q %v", got, err)
	}
	for name, file := range map[string][]byte{
		"other type":  a,
		"two blocks":  append(append([]byte{}, a...), a...),
		"not PEM":     []byte("hello"),
		"text before": append([]byte("x\n"), a...),
		"headers":     []byte("-----BEGIN THING-----\nProc-Type: 4,ENCRYPTED\n\nZGF0YQ==\n-----END THING-----\n"),
		"too large":   []byte(strings.Repeat(" ", 200)),
	} {
		want := "THING"
		if name == "other type" {
			want = "OTHER"
		}
		if _, err := c.DearmorType(file, want); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	for _, ok := range []string{"a", "v2.4.1", "two words"} {
		if err := c.CheckText("x", ok, 16, true); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", " lead", "trail ", "esc\x1b[31m", "é", strings.Repeat("a", 17)} {
		if err := c.CheckText("x", bad, 16, true); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if err := c.CheckText("x", "two words", 16, false); err == nil {
		t.Error("a space accepted where none is allowed")
	}
}
