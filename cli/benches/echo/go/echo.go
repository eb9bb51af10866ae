// The Go tutorial's server model, as an echo server: the comparison row for
// readers who come from Go.
//
// Roles, as in the tutorial: the main goroutine waits for SIGINT/SIGTERM/SIGQUIT
// (signal.Notify) and, on one, cancels the context and waits for everyone; one
// goroutine accepts; one goroutine per connection echoes every byte in order.
// On cancel a handler stops reading, sends its FIN, waits for the peer's FIN
// (bounded), and says "handler done."; main then says "All done." and exits 0.
//
// It follows the echo bench's server contract (benches/echo/main.rs): prints
// "listening on ADDR" on stderr once bound, takes the address as -listen ADDR
// (or as its only argument). Standard library only; `cargo bench --bench echo`
// builds it with `go build` (no network needed).
package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

// Bytes read at once per connection.
const bufSize = 16 * 1024

// How long a handler waits for the peer's FIN after sending its own.
const drainTimeout = 10 * time.Second

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	flag.Parse()
	addr := *listen
	if flag.NArg() == 1 {
		addr = flag.Arg(0)
	}

	ln, err := net.Listen("tcp", addr)
	if err != nil {
		log.Fatalf("listen %s: %v", addr, err)
	}
	log.Printf("listening on %s", ln.Addr())

	ctx, cancel := context.WithCancel(context.Background())
	quit := make(chan os.Signal, 1)
	signal.Notify(quit, syscall.SIGINT, syscall.SIGTERM, syscall.SIGQUIT)

	var wg sync.WaitGroup
	live := &liveConns{m: make(map[*net.TCPConn]struct{})}
	wg.Add(1)
	go accept(ctx, ln, live, &wg)

	sig := <-quit
	log.Printf("recv quit signal: %v", sig)
	cancel()
	ln.Close()
	live.wakeAll()
	wg.Wait()
	log.Printf("All done.")
}

// liveConns lets main wake the handlers blocked in Read once the context is
// cancelled (a Read cannot select on ctx.Done()); cheaper than a watcher
// goroutine per connection.
type liveConns struct {
	mu sync.Mutex
	m  map[*net.TCPConn]struct{}
}

func (l *liveConns) add(c *net.TCPConn) {
	l.mu.Lock()
	l.m[c] = struct{}{}
	l.mu.Unlock()
}

func (l *liveConns) remove(c *net.TCPConn) {
	l.mu.Lock()
	delete(l.m, c)
	l.mu.Unlock()
}

func (l *liveConns) wakeAll() {
	l.mu.Lock()
	for c := range l.m {
		c.SetReadDeadline(time.Now())
	}
	l.mu.Unlock()
}

// accept runs until the listener is closed, one goroutine per connection.
func accept(ctx context.Context, ln net.Listener, live *liveConns, wg *sync.WaitGroup) {
	defer wg.Done()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				log.Printf("accept loop done.")
				return
			}
			log.Printf("accept: %v", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		tcp := conn.(*net.TCPConn)
		live.add(tcp)
		if ctx.Err() != nil {
			// Cancelled between Accept and add: wakeAll may have missed it.
			tcp.SetReadDeadline(time.Now())
		}
		wg.Add(1)
		go handle(ctx, tcp, live, wg)
	}
}

// handle echoes until the peer's FIN or the context's cancel.
func handle(ctx context.Context, conn *net.TCPConn, live *liveConns, wg *sync.WaitGroup) {
	defer wg.Done()
	defer conn.Close()
	defer live.remove(conn)
	peer := conn.RemoteAddr()
	buf := make([]byte, bufSize)
	reason := "peer closed"
	for {
		n, err := conn.Read(buf)
		if n > 0 {
			if _, werr := conn.Write(buf[:n]); werr != nil {
				reason = "write: " + werr.Error()
				break
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			if ctx.Err() != nil {
				reason = "drained"
				conn.CloseWrite()
				conn.SetReadDeadline(time.Now().Add(drainTimeout))
				io.Copy(io.Discard, conn)
				break
			}
			reason = "read: " + err.Error()
			break
		}
	}
	log.Printf("handler done. %s: %s", peer, reason)
}
