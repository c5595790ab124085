//go:build !linux

package attest

import "syscall"

func sysProcAttr() *syscall.SysProcAttr { return nil }
