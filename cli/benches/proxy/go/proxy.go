// The Go model of a TCP proxy: per client, dial the upstream and run
// io.Copy each way in its own goroutine; the client's EOF becomes
// CloseWrite toward the upstream, and back. On Linux, io.Copy between two
// *net.TCPConn uses splice(2).
package main

import (
	"io"
	"log"
	"net"
	"os"
)

func pipe(dst, src *net.TCPConn, done chan<- struct{}) {
	io.Copy(dst, src)
	dst.CloseWrite()
	done <- struct{}{}
}

func handle(client *net.TCPConn, upstream string) {
	defer client.Close()
	conn, err := net.Dial("tcp", upstream)
	if err != nil {
		return
	}
	up := conn.(*net.TCPConn)
	defer up.Close()
	done := make(chan struct{}, 2)
	go pipe(up, client, done)
	go pipe(client, up, done)
	<-done
	<-done
}

func main() {
	if len(os.Args) != 3 {
		log.Fatal("usage: go-proxy LISTEN UPSTREAM")
	}
	l, err := net.Listen("tcp", os.Args[1])
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("listening on %s", l.Addr())
	for {
		c, err := l.Accept()
		if err != nil {
			continue
		}
		go handle(c.(*net.TCPConn), os.Args[2])
	}
}
