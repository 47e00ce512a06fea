//! The README's example: 1000 tasks doing blocking reads, on 2 servers.
use std::io::{Read, Write};
use std::sync::Arc;

fn main() -> std::io::Result<()> {
    let rt = umcg_runtime::Builder::new().servers(2).build()?;
    let (reader, mut writer) = std::io::pipe()?;
    let reader = Arc::new(reader);
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let r = reader.clone(); // each read() blocks its task; the servers run the others
            rt.spawn(move || (&*r).read_exact(&mut [0; 4]).map(|()| 1))
        })
        .collect();
    writer.write_all(&[7; 4000])?;
    let done: u32 = tasks.into_iter().map(|t| t.join().unwrap().unwrap()).sum();
    assert_eq!(done, 1000);
    println!("{done} tasks did a blocking read on 2 servers");
    Ok(())
}
