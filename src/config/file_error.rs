//! An error in a file an operator wrote, at a line when one is to blame: `FILE:LINE: message`.

/// What is wrong with a file (a wg-quick file, a credentials file), and where, for one-line errors and `check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    pub file: String,
    /// 1-based; None when the whole file is at fault (missing, unreadable, a section absent).
    pub line: Option<usize>,
    pub message: String,
}

impl FileError {
    pub fn whole(file: &std::path::Path, message: impl Into<String>) -> Self {
        FileError {
            file: file.display().to_string(),
            line: None,
            message: message.into(),
        }
    }

    pub fn at(file: &std::path::Path, line: usize, message: impl Into<String>) -> Self {
        FileError {
            file: file.display().to_string(),
            line: Some(line),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for FileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.file, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

impl std::error::Error for FileError {}
