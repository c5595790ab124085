package attest

import "syscall"

// sysProcAttr makes swtpm die with the process that started it, so neither
// a crashed gateway nor a killed test binary leaves one behind. (Linux sends
// the signal when the OS thread that started it exits; Go keeps its threads
// unless a goroutine exits while locked to one.)
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
