package store

import (
	"errors"
	"fmt"
	"strconv"

	bolt "go.etcd.io/bbolt"
)

// SchemaVersion is the version of the store's on-disk format this code
// writes, recorded in each of the two files (key "schema" of bucket "meta",
// a decimal number). Versions:
//
//   - 1: the format before versions were recorded (no meta bucket).
//   - 2: the same records, and the version record.
//
// The version changes only when an older hsmkms would misread the files or
// damage them; a bucket that older versions can ignore (as they ignore
// every bucket they do not know) needs no new version.
const SchemaVersion = 2

var (
	// ErrSchemaTooNew: a file was written by a newer hsmkms, whose format
	// this one does not know. Nothing was changed.
	ErrSchemaTooNew = errors.New("store: schema too new")
	// ErrSchemaInvalid: a file's schema record is not a version number.
	ErrSchemaInvalid = errors.New("store: schema record invalid")
)

var (
	metaBucket = []byte("meta")
	schemaKey  = []byte("schema")
)

// readSchema returns the schema version of the file tx belongs to (name is
// its path, for messages): 0 for a new, empty file, else 1 to
// SchemaVersion. A newer version is ErrSchemaTooNew.
func readSchema(tx *bolt.Tx, name string) (int, error) {
	b := tx.Bucket(metaBucket)
	if b == nil {
		if tx.Bucket(keysBucket) != nil || tx.Bucket(grantsBucket) != nil {
			return 1, nil // written before versions were recorded
		}
		return 0, nil
	}
	raw := b.Get(schemaKey)
	v, err := strconv.Atoi(string(raw))
	if err != nil || v < 1 || string(raw) != strconv.Itoa(v) {
		return 0, fmt.Errorf("%w: %s: schema record %q is not a version number", ErrSchemaInvalid, name, raw)
	}
	if v > SchemaVersion {
		return v, fmt.Errorf("%w: %s has schema version %d, and this hsmkms reads schema version %d at most: a newer hsmkms wrote it. Run that hsmkms (or a later one), or restore a backup this version made",
			ErrSchemaTooNew, name, v, SchemaVersion)
	}
	return v, nil
}

// checkSchemas refuses the store before either file changes if one of
// them has a schema this code cannot read.
func checkSchemas(dbs ...*bolt.DB) error {
	for _, db := range dbs {
		err := db.View(func(tx *bolt.Tx) error {
			_, err := readSchema(tx, db.Path())
			return err
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// migrateSchema brings the file tx belongs to to SchemaVersion inside tx,
// the caller's write transaction, so that a migration commits whole or not
// at all, with the rest of the caller's work. It returns the version the
// file had (readSchema).
func migrateSchema(tx *bolt.Tx, name string) (int, error) {
	from, err := readSchema(tx, name)
	if err != nil || from == SchemaVersion {
		return from, err
	}
	// 0 or 1 → 2: schema 2 adds only the version record; the records are
	// read as they are.
	b, err := tx.CreateBucketIfNotExists(metaBucket)
	if err != nil {
		return from, err
	}
	return from, b.Put(schemaKey, []byte(strconv.Itoa(SchemaVersion)))
}

// Schema returns the store's schema version (SchemaVersion: Open migrates
// older files and refuses newer ones) and the version this Open migrated it
// from: 0 if it was already current or new, else the oldest version one of
// its files had.
func (s *Bolt) Schema() (version, migratedFrom int) { return SchemaVersion, s.migratedFrom }
