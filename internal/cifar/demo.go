package cifar

import (
	"bytes"
	"compress/gzip"
	_ "embed"
	"fmt"
	"io"
)

// demoGz holds the first 2,000 records of the official CIFAR-10 binary
// training batch data_batch_1.bin (from cifar-10-binary.tar.gz, MD5 of the
// whole file 5dd7e06a14cb22eb9f671a540d1b7c25), unchanged, in the binary
// record format, gzip-compressed (5.7 MB). It was made with
//
//	head -c $((2000*3073)) data_batch_1.bin | gzip -9 -n > demo.bin.gz
//
// and the uncompressed 6,146,000 bytes have MD5 d4fe023942b61c24694d631485866cee.
// It lets the binary train and predict for a demo without any download.
//
//go:embed demo.bin.gz
var demoGz []byte

// DemoLen is the number of images in the demo dataset.
const DemoLen = 2000

// Demo returns the embedded demo dataset: the first 2,000 images of the
// CIFAR-10 training set (from data_batch_1). It is part of the training
// set, never the test set.
func Demo() (*Dataset, error) {
	zr, err := gzip.NewReader(bytes.NewReader(demoGz))
	if err != nil {
		return nil, fmt.Errorf("cifar: demo data: %w", err)
	}
	b, err := io.ReadAll(io.LimitReader(zr, DemoLen*RecordBytes+1))
	if err != nil {
		return nil, fmt.Errorf("cifar: demo data: %w", err)
	}
	if len(b) != DemoLen*RecordBytes {
		return nil, fmt.Errorf("cifar: demo data: %d bytes, want %d", len(b), DemoLen*RecordBytes)
	}
	ds, err := parseBin(b)
	if err != nil {
		return nil, fmt.Errorf("cifar: demo data: %w", err)
	}
	return ds, nil
}
