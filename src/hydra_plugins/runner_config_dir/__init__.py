"""`runner train --config-dir DIR`: the user's configs come first, so a file there overrides the shipped one."""
