package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/vgg16/vgg16/internal/cifar"
)

func dataCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "data", Short: "Manage the CIFAR-10 dataset", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return cmd.Help() }} // an unknown subcommand is an error
	var dir, format, url string
	dl := &cobra.Command{
		Use:   "download",
		Short: "Download CIFAR-10 (MD5-checked) and extract it",
		Example: `  vgg16 data download                    # binary version into ./data/cifar-10-batches-bin
  vgg16 data download --format py --dir ./data   # the python version torchvision uses`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if format != "bin" && format != "py" {
				return fmt.Errorf("--format %q: want bin or py", format)
			}
			if dir == "" {
				return errors.New(`--dir "": give the folder to put the dataset in (./data by default)`)
			}
			// Ctrl-C cancels the transfer, and Download removes what it
			// had written.
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			err := download(ctx, cmd.OutOrStdout(), dir, format, url)
			if err != nil && ctx.Err() != nil && cmd.Context().Err() == nil {
				return errors.New("download interrupted: nothing of it was kept; run it again to start over")
			}
			return err
		},
	}
	dl.Flags().StringVar(&dir, "dir", "./data", "directory to put the dataset in")
	dl.Flags().StringVar(&format, "format", "bin", "bin (cifar-10-binary.tar.gz) or py (cifar-10-python.tar.gz)")
	dl.Flags().StringVar(&url, "url", "", "mirror URL of the archive (the official MD5 is still checked)")
	cmd.AddCommand(dl)
	return cmd
}

// httpClient fails fast where there is no network, but lets a slow
// download of the 163 MB archive run as long as bytes keep coming. It
// fetches one file: no connection is kept alive (net/http peeks at an idle
// one and logs what a server sent past its Content-Length, on stderr).
var httpClient = &http.Client{Transport: &http.Transport{
	Proxy:                 http.ProxyFromEnvironment,
	DisableKeepAlives:     true,
	DialContext:           (&net.Dialer{Timeout: 15 * time.Second}).DialContext,
	TLSHandshakeTimeout:   15 * time.Second,
	ResponseHeaderTimeout: 30 * time.Second,
}}

func download(ctx context.Context, w io.Writer, dir, format, url string) error {
	if cifar.HasFormat(dir, format) {
		fmt.Fprintf(w, "CIFAR-10 (%s version) is already in %s\n", format, dir)
		return nil
	}
	// The download goes into dir/cifar-10-batches-bin (or -py), which must
	// not hold the user's partial copy: it would be replaced.
	target := filepath.Join(dir, cifar.BinFolder)
	if format == "py" {
		target = filepath.Join(dir, cifar.PyFolder)
	}
	if folder, lacks := cifar.Incomplete(dir); folder == target {
		return fmt.Errorf("--dir %s: %s holds part of CIFAR-10, %s: complete it or move it away, then download", dir, folder, lacks)
	}
	if _, err := os.Lstat(dir); os.IsNotExist(err) { // Lstat: a link to nowhere is the user's, never removed
		defer os.Remove(dir) // made for the download: removed if a failure left it empty
	}
	var bar *progressbar.ProgressBar
	tty := terminal(w)
	lastPct := int64(-1)
	opt := cifar.DownloadOptions{Dir: dir, Format: format, URL: url, Client: httpClient,
		Progress: func(done, total int64) {
			if tty != nil {
				if bar == nil {
					bar = progressbar.NewOptions64(total, progressbar.OptionSetWriter(tty), progressbar.OptionShowBytes(true),
						progressbar.OptionSetDescription("downloading CIFAR-10"), progressbar.OptionSetWidth(30), progressbar.OptionClearOnFinish(),
						progressbar.OptionUseANSICodes(ansiConsole(tty)))
				}
				bar.Set64(done)
				return
			}
			if total > 0 && done*10/total > lastPct {
				lastPct = done * 10 / total
				fmt.Fprintf(w, "downloading CIFAR-10: %.1f/%.1f MB\n", float64(done)/(1<<20), float64(total)/(1<<20))
			}
		}}
	if err := cifar.Unreadable(dir); err != nil { // named before the download is announced
		return err
	}
	fmt.Fprintf(w, "downloading CIFAR-10 (%s version) into %s\n", format, dir)
	err := cifar.Download(ctx, opt)
	if bar != nil {
		// Failed or not: where the size is unknown the bar's spinner
		// redraws by itself until finished.
		bar.Finish()
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "CIFAR-10 is ready in %s\n", dir)
	return nil
}
