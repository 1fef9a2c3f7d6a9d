//! Documents sent in the chat: admins add them, others cannot, hostile names stay inside.

use crate::common::*;
use crate::fake_bot::*;

#[test]
fn admins_add_documents_by_sending_them_and_others_cannot() {
    let tmp = tempfile::tempdir().unwrap();
    let data = knowledge_base(tmp.path());
    let admin_code = invite(&data, "Irina", &[]);
    assert!(run(sputnik(&data).args(["users", "promote", "1"])).status.success());
    let employee_code = invite(&data, "Anna", &[]);
    let server = Server::start();
    let bot = serve(&data, &server);
    server.text(1001, "en", &format!("/start {admin_code}"));
    server.text(2002, "en", &format!("/start {employee_code}"));
    server.wait_for(1001, 1);
    server.wait_for(2002, 1);

    let policy =
        "# Pet policy\n\nDogs are welcome in the office on Fridays if they are calm and vaccinated.\n";
    server.document(2002, "pets.md", policy.as_bytes(), policy.len());
    assert!(server.wait_for(2002, 2)[1]["text"].as_str().unwrap().contains("admins only"));
    server.document(1001, "huge.pdf", b"%PDF-", 30 * 1024 * 1024);
    assert!(server.wait_for(1001, 2)[1]["text"].as_str().unwrap().contains("too large"));
    assert!(server.calls("download").is_empty(), "refused files are never downloaded");

    server.document(1001, "../../pets.md", policy.as_bytes(), policy.len());
    let imported = server.wait_for(1001, 3)[2]["text"].as_str().unwrap().to_owned();
    assert!(imported.contains("Imported <b>Pet policy</b>"), "{imported}");
    server.document(1001, "broken.docx", b"not a zip", 9);
    assert!(server.wait_for(1001, 4)[3]["text"].as_str().unwrap().contains("not a readable DOCX"));

    server.text(2002, "en", "Can I bring my dog to the office?");
    let answer = server.wait_for(2002, 3)[2]["text"].as_str().unwrap().to_owned();
    assert!(answer.contains("Fridays") && answer.contains("pets.md"), "{answer}");
    assert!(data.join("uploads/pets.md").is_file(), "the upload stays inside the data directory");
    stop(bot);
}
